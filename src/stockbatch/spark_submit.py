"""Entry point for ``spark-submit``: any stockbatch command, run with the Spark engine
on the cluster spark-submit connects to.

    spark-submit --master spark://host:7077 --conf spark.executor.memory=4g \\
        "$(python -c 'import stockbatch.spark_submit as m; print(m.__file__)')" \\
        process --as-of 2017-11-30

The executors need the same Python environment as the driver (stockbatch and
its pinned dependencies installed, or shipped with ``--archives`` as a packed
venv); the lake path must be reachable from every node (a shared file system).
The master, memory and other Spark settings come from spark-submit, not from
stockbatch's settings.
"""

from __future__ import annotations

import os


def main() -> None:
    """Run the stockbatch CLI with engine=spark under the session spark-submit made."""
    os.environ["STOCKBATCH_PROCESS__ENGINE"] = "spark"
    os.environ["STOCKBATCH_SPARK_SUBMIT"] = "1"
    from stockbatch.cli import app

    app(prog_name="stockbatch-spark")


if __name__ == "__main__":
    main()
