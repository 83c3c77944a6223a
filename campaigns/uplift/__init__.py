"""Uplift targeting from the campaigns' own randomised control groups (docs/uplift.md).

``metrics``: Qini and uplift curves, Qini coefficient, AUUC, uplift at k with bootstrap intervals (arrays in,
numbers out). ``models``: T-learner, X-learner and class transformation on LightGBM behind one contract, saved
as text (no pickle). ``history``: training rows from completed campaign runs, features as of each fire time.
``targeting``: the ``uplift`` arm strategy as a campaign :class:`~campaigns.campaign_run.Ranker`.

Why under ``campaigns/``: the models learn from campaign history (runs, arms, holdouts, conversions) and feed
campaign targeting; ``recommender/`` stays the pure ranking library it is.
"""
