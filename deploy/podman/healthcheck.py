"""HEALTHCHECK of the stockbatch image (deploy/Dockerfile).

The container's command decides what "healthy" means: ``stockbatch serve`` must
answer ``/healthz`` (over https when STOCKBATCH_API__TLS is on); every other role
(producer, collector, process, Airflow tasks) is healthy when the package imports
and its home is writable. Exit 0 healthy, 1 not.
"""

import os
import ssl
import sys
import urllib.request


def main() -> int:
    with open("/proc/1/cmdline", "rb") as f:
        argv = f.read().decode(errors="replace").split("\0")
    if "serve" in argv:
        tls = os.environ.get("STOCKBATCH_API__TLS", "").lower() in ("1", "true", "yes", "on")
        port = os.environ.get("STOCKBATCH_API__PORT", "8000")
        context = ssl._create_unverified_context() if tls else None  # loopback probe only
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/healthz"
        with urllib.request.urlopen(url, timeout=4, context=context) as response:
            return 0 if response.status == 200 else 1
    import stockbatch  # noqa: F401  (the environment is whole)

    return 0 if os.access(os.environ.get("STOCKBATCH_HOME", "."), os.W_OK) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # any failure is "unhealthy", with its reason in the log
        print(f"unhealthy: {exc}", file=sys.stderr)
        sys.exit(1)
