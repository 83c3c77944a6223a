"""A Spark session for campaign runs, with one-line errors when the engine is not installed."""

from __future__ import annotations

import os
import shutil
from typing import Any

from recommender.errors import UserError

DEFAULT_MASTER = "local[2]"


class SparkUnavailableError(UserError):
    """pyspark or a Java runtime is missing."""


def spark_missing() -> str | None:
    """Why Spark cannot start here (None when it can): pyspark not installed, or no ``java`` on PATH/JAVA_HOME."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install 'mktg[spark]')"
    java_home = os.environ.get("JAVA_HOME")
    if not (java_home and os.path.exists(os.path.join(java_home, "bin", "java"))) and shutil.which("java") is None:
        return (
            "no Java runtime (java) found: Spark needs Java 17 or later (Debian: apt-get install default-jre-headless)"
        )
    return None


def spark_session(master: str = DEFAULT_MASTER, *, app_name: str = "mktg", driver_memory: str = "4g") -> Any:
    """The (shared) Spark session on ``master``: UTC session time zone, Arrow transfers, quiet logs.

    ``driver_memory`` only applies when this call starts the JVM (local mode: the executors live in it too).
    """
    missing = spark_missing()
    if missing:
        raise SparkUnavailableError(f"--engine spark: {missing}")
    import warnings

    from pyspark.sql import SparkSession

    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)

    spark = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.driver.memory", driver_memory)
        # The driver collects the run's exclusions for the one database transaction (46M rows at 10M customers,
        # ~1.7 GB as Arrow): Spark's default 1 GB cap on collected results would abort such a run.
        .config("spark.driver.maxResultSize", "0")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.python.worker.reuse", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark
