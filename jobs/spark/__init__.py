"""The campaign run on Apache Spark (optional extra ``mktg[spark]``; see docs/scale.md).

:mod:`jobs.spark.run` runs the per-customer stages per partition of customers with the single-machine functions
(:func:`campaigns.campaign_run.plan_customers`) and the global allocation exactly (:mod:`jobs.spark.allocation`).
Nothing here is imported by the single-machine path; pyspark is imported lazily (:mod:`jobs.spark.session`).
"""
