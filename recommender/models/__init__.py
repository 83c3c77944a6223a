"""Ranking models behind one contract (:class:`RankingModel`): ALS, BPR, LightFM, popularity."""

from recommender.models.base import ModelConfigError, RankingModel, build_model, load_model, model_kinds

__all__ = ["ModelConfigError", "RankingModel", "build_model", "load_model", "model_kinds"]
