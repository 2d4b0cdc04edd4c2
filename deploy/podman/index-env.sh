# Sourced by the RUN steps of deploy/Dockerfile that download packages.
# The package index and its CA come from the build secrets `pipconf` (a pip.conf)
# and `ca` (a PEM bundle), mounted under /run/secrets for that one step only:
# nothing of them is written to a layer. Both are optional (then: PyPI, and the
# base image's CA bundle).
if [ -s /run/secrets/pipconf ]; then
    export PIP_CONFIG_FILE=/run/secrets/pipconf
    _index=$(python3 - <<'PY'
import configparser
c = configparser.ConfigParser()
c.read("/run/secrets/pipconf")
for section in ("install", "global"):
    if c.has_option(section, "index-url"):
        print(c.get(section, "index-url").strip())
        break
PY
)
    _extra=$(python3 - <<'PY'
import configparser
c = configparser.ConfigParser()
c.read("/run/secrets/pipconf")
for section in ("install", "global"):
    if c.has_option(section, "extra-index-url"):
        print(" ".join(c.get(section, "extra-index-url").split()))
        break
PY
)
    if [ -n "${_index}" ]; then
        export UV_DEFAULT_INDEX="${_index}" PIP_INDEX_URL="${_index}"
    fi
    if [ -n "${_extra}" ]; then
        export UV_INDEX="${_extra}" PIP_EXTRA_INDEX_URL="${_extra}"
    fi
    unset _index _extra
fi
if [ -s /run/secrets/ca ]; then
    # pip: PIP_CERT wins over the pip.conf's `cert`; uv: SSL_CERT_FILE.
    export PIP_CERT=/run/secrets/ca SSL_CERT_FILE=/run/secrets/ca
fi
