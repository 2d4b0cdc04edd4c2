"""A real OpenSearch 2.19 node (single node) on loopback with its security plugin:
:class:`OpenSearchService`, its jars and launcher (:func:`ensure_opensearch_jars`) and
a health probe (:func:`probe_opensearch`).

By default the node has TLS on HTTP and transport (PEM certificate from the home's CA,
:mod:`stockbatch.services.tls`) and HTTP basic auth against internal users with
generated passwords: ``admin`` (all_access), ``loader`` (writes the ``stockbatch*``
indices, aliases and templates) and ``reader`` (reads them); the record in
``services.json`` carries the loader's credentials and the CA file.
``insecure=True`` (``services up opensearch --insecure``) runs plain HTTP without the
plugin, with a warning.

The node runs from Maven Central's jars through a small launcher
(``deploy/services/opensearch/StockbatchOpenSearch.java``); why, and its files and
ports: ``deploy/services/README.md``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, ClassVar

from stockbatch.services import tls
from stockbatch.services.base import Launch
from stockbatch.services.jvm import (
    DEPLOY_DIR,
    JvmService,
    cache_root,
    copy_dependencies,
    find_java,
    find_mvn,
    jars_complete,
    log4j2_rolling_file,
)
from stockbatch.services.system import HOST, ServiceError, file_lock, write_private

OPENSEARCH_VERSION = "2.19.4"
"""OpenSearch release run locally (the newest line on Java 17); keep in sync with the pom."""

LAUNCHER_CLASS = "StockbatchOpenSearch"
SECURITY_PLUGIN_CLASS = "org.opensearch.security.OpenSearchSecurityPlugin"

ADMIN, LOADER, READER = "admin", "loader", "reader"


def user_record(passwords: dict[str, str]) -> dict[str, Any]:
    """The users of a secured search node as its registry record names them: the loader
    as ``username``/``password`` (what the pipeline logs in as), then reader and admin."""
    return {
        "username": LOADER,
        "password": passwords.get(LOADER),
        "reader_username": READER,
        "reader_password": passwords.get(READER),
        "admin_username": ADMIN,
        "admin_password": passwords.get(ADMIN),
    }


"""The internal users of the secured node (PostgreSQL's superuser, loader and reader)."""

INSECURE_WARNING = (
    "OpenSearch runs WITHOUT TLS nor authentication (--insecure): anyone on this machine "
    "can read and change its indices; run `stockbatch services down opensearch && "
    "stockbatch services up opensearch` for the secured node"
)

POM = DEPLOY_DIR / "opensearch" / "pom.xml"
LAUNCHER_SOURCE = DEPLOY_DIR / "opensearch" / f"{LAUNCHER_CLASS}.java"

_JDK_HINT = "install a Java 17 JDK (Debian: apt-get install openjdk-17-jdk-headless)"


# ----------------------------------------------------------------------------- provisioning


def opensearch_dir(version: str = OPENSEARCH_VERSION, root: Path | None = None) -> Path:
    """The cache folder of OpenSearch ``version`` (``libs/`` and ``launcher-*/`` inside)."""
    return (root or cache_root()) / f"opensearch-{version}"


def _launcher_dir(base: Path) -> Path:
    # Keyed by the source's hash: an edited launcher is recompiled once, never run stale.
    digest = hashlib.sha256(LAUNCHER_SOURCE.read_bytes()).hexdigest()[:12]
    return base / f"launcher-{digest}"


def find_javac(java: str) -> str:
    """The ``javac`` of the same JDK as ``java`` (else the one on PATH)."""
    sibling = Path(java).resolve().parent / "javac"
    javac = str(sibling) if sibling.exists() else shutil.which("javac")
    if not javac:
        raise ServiceError(f"`javac` was not found next to {java} nor on PATH: {_JDK_HINT}")
    return javac


def _compile_launcher(javac: str, libs: Path, out: Path) -> None:
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [javac, "-proc:none", "-cp", f"{libs}/*", "-d", str(tmp), str(LAUNCHER_SOURCE)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ServiceError("compiling the OpenSearch launcher took over 300 s") from exc
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ServiceError(
            f"javac could not compile {LAUNCHER_SOURCE} (exit {done.returncode}):\n"
            f"{(done.stdout + done.stderr).strip()[-3000:]}"
        )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def security_zip(version: str) -> str:
    """File name of the security plugin's release zip Maven copies into ``libs/``."""
    return f"opensearch-security-{version}.0.zip"


def _artifact(jar: str) -> str:
    # "jackson-databind-2.18.2.jar" -> "jackson-databind": the version starts at "-<digit>".
    match = re.match(r"^(.*?)-\d[^/]*\.jar$", jar)
    return match.group(1) if match else jar


def _unpack_security(libs: Path, out: Path, version: str) -> None:
    """Unpack the plugin's jars from its zip in ``libs`` into ``out``, minus the ones
    ``libs`` already has (same artifact: the server's copy wins, one class per name)."""
    zip_file = libs / security_zip(version)
    if not zip_file.exists():
        raise ServiceError(
            f"{zip_file} is missing: delete {libs.parent} so that the next start resolves "
            "the OpenSearch jars and its security plugin again"
        )
    present = {_artifact(p.name) for p in libs.glob("*.jar")}
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with zipfile.ZipFile(zip_file) as archive:
        for member in archive.namelist():
            name = Path(member).name
            if member.endswith(".jar") and "/" not in member and _artifact(name) not in present:
                (tmp / name).write_bytes(archive.read(member))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def ensure_opensearch_jars(*, version: str = OPENSEARCH_VERSION, root: Path | None = None) -> Path:
    """Return the cache folder of OpenSearch ``version``, provisioning it on first use.

    Provisioning = Maven resolves the jars (and the security plugin's zip) into
    ``libs/`` (a ``COMPLETE`` file marks a finished download), the plugin's own jars
    are unpacked into ``security/``, then ``javac`` compiles the launcher into
    ``launcher-<hash>/``.
    Safe to call from several processes at once (a file lock makes one of them work).
    Raises :class:`ServiceError` naming what to install when ``mvn``/``javac`` is missing.
    """
    base = opensearch_dir(version, root)
    libs = base / "libs"
    security = base / "security"
    if jars_complete(libs) and security.is_dir() and _launcher_dir(base).is_dir():
        return base
    if not POM.exists() or not LAUNCHER_SOURCE.exists():
        raise ServiceError(f"{POM.parent} is incomplete: run from a stockbatch checkout")
    with file_lock(base / ".lock"):
        java = find_java()
        if not jars_complete(libs):
            mvn = find_mvn(f"OpenSearch {version}", libs)
            copy_dependencies(
                mvn, POM, "opensearch.version", version, "org.opensearch:opensearch", libs
            )
            shutil.rmtree(security, ignore_errors=True)  # from the previous libs, if any
        if not security.is_dir():
            _unpack_security(libs, security, version)
        launcher = _launcher_dir(base)
        if not launcher.is_dir():
            _compile_launcher(find_javac(java), libs, launcher)
    return base


# ----------------------------------------------------------------------------- probing


def cluster_health(
    url: str,
    timeout: float = 2.0,
    *,
    auth: tuple[str, str] | None = None,
    ca_file: Path | None = None,
) -> dict[str, Any] | None:
    """``GET <url>/_cluster/health`` as a dict, or None when nothing answers in ``timeout`` s.

    ``auth`` (user, password) is sent as HTTP basic auth; ``ca_file`` is the CA an
    ``https://`` server certificate must chain to (hostname checked too). A refused
    login, a failed TLS verification or an error status also give None.
    """
    request = urllib.request.Request(f"{url.rstrip('/')}/_cluster/health")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
    context = None
    if url.startswith("https://"):
        # Default context = certificate and hostname verification; only the trust changes.
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as r:
            body: dict[str, Any] = json.loads(r.read())
            return body
    except (OSError, ValueError, urllib.error.URLError):
        return None


def probe_opensearch(
    url: str,
    timeout: float = 2.0,
    *,
    auth: tuple[str, str] | None = None,
    ca_file: Path | None = None,
) -> bool:
    """True if an OpenSearch node at ``url`` reports cluster health yellow or green.

    ``auth`` and ``ca_file``: as for :func:`cluster_health` (a secured node).
    """
    health = cluster_health(url, timeout, auth=auth, ca_file=ca_file)
    return bool(health and health.get("status") in ("yellow", "green"))


# ----------------------------------------------------------------------------- the node


_LOG4J2 = log4j2_rolling_file(
    "node",
    "error",
    "${sys:opensearch.logs.base_path}/stockbatch.log",
    "[%d{ISO8601}][%-5p][%-25c{1.}] %marker%m%n",
    "info",
    # Deprecation warnings (one per request of some old APIs) stay out of the node's log.
    "logger.deprecation.name = org.opensearch.deprecation\nlogger.deprecation.level = error\n",
)


def _yml(value: Any) -> str:
    # JSON is YAML: one line, every string quoted (DNs hold commas, hashes hold "$").
    return json.dumps(value)


def security_config(hashes: dict[str, str]) -> dict[str, str]:
    """The files of ``config/opensearch-security/`` (the security index's first content).

    ``hashes``: bcrypt hash of each internal user's password. Basic auth against the
    internal users only (no anonymous access); ``admin`` maps to the built-in
    ``all_access`` role, ``loader`` and ``reader`` to the roles below, which mirror
    PostgreSQL's loader and reader: only the ``stockbatch*`` indices.
    """

    def meta(kind: str) -> str:
        return f'_meta:\n  type: "{kind}"\n  config_version: 2\n'

    users = {
        ADMIN: "stockbatch: everything (all_access), for operators",
        LOADER: "stockbatch: loads the stockbatch* indices",
        READER: "stockbatch: reads the stockbatch* indices",
    }
    internal_users = meta("internalusers") + "".join(
        f"{user}:\n  hash: {_yml(hashes[user])}\n  reserved: true\n  backend_roles: []\n"
        f"  description: {_yml(text)}\n"
        for user, text in users.items()
    )
    return {
        "config.yml": meta("config") + "config:\n"
        "  dynamic:\n"
        "    http:\n"
        "      anonymous_auth_enabled: false\n"
        "    authc:\n"
        "      basic_internal_auth_domain:\n"
        '        description: "HTTP basic auth against the internal users"\n'
        "        http_enabled: true\n"
        "        transport_enabled: true\n"
        "        order: 0\n"
        "        http_authenticator:\n"
        "          type: basic\n"
        "          challenge: true\n"
        "        authentication_backend:\n"
        "          type: intern\n",
        "internal_users.yml": internal_users,
        "roles.yml": meta("roles") + "stockbatch_loader:\n"
        "  reserved: true\n"
        '  description: "Creates, loads, swaps and deletes the stockbatch* indices"\n'
        "  cluster_permissions:\n"
        '    - "cluster_monitor"\n'
        '    - "cluster_composite_ops"\n'  # _bulk, _mget, _msearch
        '    - "cluster_manage_index_templates"\n'
        "  index_permissions:\n"
        '    - index_patterns: ["stockbatch*"]\n'
        '      allowed_actions: ["crud", "create_index", "manage", "manage_aliases"]\n'
        # GET /_alias/<name> asks about every index (the alias may not exist yet): names only.
        '    - index_patterns: ["*"]\n'
        '      allowed_actions: ["indices:admin/aliases/get"]\n'
        "stockbatch_reader:\n"
        "  reserved: true\n"
        '  description: "Reads and searches the stockbatch* indices"\n'
        "  cluster_permissions:\n"
        '    - "cluster_monitor"\n'
        '    - "cluster_composite_ops_ro"\n'
        "  index_permissions:\n"
        '    - index_patterns: ["stockbatch*"]\n'
        '      allowed_actions: ["read", "indices_monitor", "indices:admin/aliases/get",'
        ' "indices:admin/mappings/get"]\n'
        '    - index_patterns: ["*"]\n'
        '      allowed_actions: ["indices:admin/aliases/get"]\n',
        "roles_mapping.yml": meta("rolesmapping")
        + f"all_access:\n  reserved: true\n  users: [{_yml(ADMIN)}]\n"
        f"stockbatch_loader:\n  reserved: true\n  users: [{_yml(LOADER)}]\n"
        f"stockbatch_reader:\n  reserved: true\n  users: [{_yml(READER)}]\n",
        "action_groups.yml": meta("actiongroups"),
        "tenants.yml": meta("tenants"),
        "nodes_dn.yml": meta("nodesdn"),
        "allowlist.yml": meta("allowlist") + "config:\n  enabled: false\n  requests: {}\n",
    }


class OpenSearchService(JvmService):
    """One local OpenSearch node under ``home/services/opensearch``.

    ``port`` is the HTTP port on 127.0.0.1 (default: the one used last time, else a
    free one); the transport port (node-to-node, unused by clients) is chosen and
    kept the same way. ``heap`` is the JVM heap (-Xms = -Xmx). ``insecure``: plain
    HTTP without the security plugin (see the module doc); :attr:`warnings` then says so.
    """

    name = "opensearch"
    title = "OpenSearch"
    port_hint = "OpenSearchService(home, port=N)"  # the CLI's --port is Kafka's
    log_name = "logs/stockbatch.log"
    probe_interval = 0.25
    secret_fields: ClassVar[tuple[str, ...]] = ("password", "reader_password", "admin_password")

    def __init__(
        self,
        home: Path,
        port: int | None = None,
        *,
        version: str = OPENSEARCH_VERSION,
        heap: str = "768m",
        start_timeout: float = 180.0,
        stop_timeout: float = 30.0,
        cache: Path | None = None,
        insecure: bool = False,
    ) -> None:
        # TLS (and authentication) unless `services up --insecure`.
        self.insecure = insecure
        self.warnings: list[str] = []
        super().__init__(
            home,
            port,
            version=version,
            heap=heap,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
            cache=cache,
        )

    @property
    def config_dir(self) -> Path:
        """``opensearch.yml``, ``log4j2.properties``, the certificate and the security
        plugin's ``opensearch-security/`` files, regenerated at each start."""
        return self.dir / "config"

    @property
    def secured(self) -> bool:
        """True if the node runs (or last ran) with TLS and users; from the stored state,
        so a handle made without options describes the node as it runs."""
        return bool(self._stored_state().get("tls"))

    @property
    def url(self) -> str:
        """``https://127.0.0.1:<port>`` (``http://`` with ``--insecure``)."""
        return f"{'https' if self.secured else 'http'}://{self.address}"

    @property
    def ca_file(self) -> Path | None:
        """The CA file clients verify the node's certificate with; None without TLS."""
        state = self._stored_state()
        return Path(state["ca_file"]) if state.get("tls") and state.get("ca_file") else None

    def credentials(self, user: str = LOADER) -> tuple[str, str] | None:
        """``(user, password)`` of an internal user (``admin``, ``loader``, ``reader``);
        None when the node runs without security."""
        if not self.secured:
            return None
        password = self._stored_state().get("passwords", {}).get(user)
        if not password:
            raise ValueError(
                f"unknown OpenSearch user {user!r}; known: {ADMIN}, {LOADER}, {READER}"
            )
        return user, str(password)

    def endpoint(self) -> dict[str, Any]:
        """What ``services.json`` records for this node (the loader's credentials as
        ``username``/``password``: what ``stockbatch load`` and the API connect with)."""
        base = {
            "url": self.url,
            "version": self.version,
            "data_dir": str(self.data_dir),
            "log_file": str(self.log_file),
        }
        if not self.secured:
            # No security plugin: plain HTTP without users, hence loopback only.
            return {**base, "tls": False, "ca_file": None, "security": "none (--insecure)"}
        return {
            **base,
            "tls": True,
            "ca_file": str(self.ca_file),
            "security": "TLS + basic auth (internal users admin, loader, reader)",
            **user_record(self._stored_state().get("passwords", {})),
        }

    # -- what differs from the other services ------------------------------------

    def _ensure_jars(self) -> Path:
        return ensure_opensearch_jars(version=self.version, root=self.cache)

    def _prepare(self, state: dict[str, Any], tools: tuple[str, Path]) -> Launch:
        java, base = tools
        self._refuse_downgrade(state)
        state.update(
            transport_port=self._second_port(state, "transport_port", state["port"]),
            version=self.version,
        )
        for folder in (self.data_dir, self.log_file.parent, self.config_dir):
            folder.mkdir(parents=True, exist_ok=True)
        # Owner only: the security plugin warns about (and the folder holds) the node's key
        # and the users' hashes.
        self.config_dir.chmod(0o700)
        yml = self._opensearch_yml(state)
        if self.insecure:
            state.update(tls=False, ca_file=None)
            self.warnings.append(INSECURE_WARNING)
        else:
            yml += self._install_security(state)
            state.update(tls=True, ca_file=str(tls.ca_file(self.home)))
        self._save_state(state)
        write_private(self.config_dir / "opensearch.yml", yml)
        write_private(self.config_dir / "log4j2.properties", _LOG4J2)
        return Launch(self._java_command(java, base), cwd=self.dir)

    def _refuse_downgrade(self, state: dict[str, Any]) -> None:
        """A node cannot open data a newer release wrote (homes made before the move from
        2.19.6 to 2.19.4, the newest with a security plugin on Maven Central): say what to do
        instead of letting it fail with a stack trace."""

        def key(version: str) -> tuple[int, ...]:
            return tuple(int(p) for p in re.findall(r"\d+", version))

        before = str(state.get("version") or "")
        if before and key(before) > key(self.version) and any(self.data_dir.glob("*")):
            raise ServiceError(
                f"the OpenSearch data under {self.data_dir} was written by {before}, newer "
                f"than this node ({self.version}), which cannot open it: run `stockbatch "
                "services down --purge opensearch`, then `services up opensearch` and "
                "`stockbatch load --search-only --search opensearch` to rebuild the indices "
                "from gold"
            )

    def _install_security(self, state: dict[str, Any]) -> str:
        """Certificate, users and roles of the security plugin; its ``opensearch.yml`` lines.

        Passwords are generated once and kept in the state (0600); the security index is
        initialised from ``opensearch-security/`` on the first secured start only (later
        starts find the index and ignore the files)."""
        import bcrypt
        from cryptography import x509

        if "passwords" not in state:
            passwords = {user: secrets.token_urlsafe(24) for user in (ADMIN, LOADER, READER)}
            # bcrypt (12 rounds, the plugin's default): the only form the node sees.
            state["passwords"] = passwords
            state["hashes"] = {
                u: bcrypt.hashpw(pw.encode(), bcrypt.gensalt(12)).decode()
                for u, pw in passwords.items()
            }
        self._save_state(state)  # before the node can create its index with them
        issued = tls.issue(self.home, self.name)
        certs = self.config_dir / "certs"
        certs.mkdir(mode=0o700, exist_ok=True)
        # Copies inside the config folder: the plugin resolves its files from there.
        write_private(certs / "node.key", issued.key_file.read_text())
        write_private(certs / "node.pem", issued.cert_file.read_text())
        write_private(certs / "ca.pem", issued.ca_file.read_text())
        subject = x509.load_pem_x509_certificate(
            issued.cert_file.read_bytes()
        ).subject.rfc4514_string()
        folder = self.config_dir / "opensearch-security"
        folder.mkdir(mode=0o700, exist_ok=True)
        for name, text in security_config(state["hashes"]).items():
            write_private(folder / name, text)
        lines = [
            "# The security plugin: TLS on both layers with the home's CA, internal users.",
            "plugins.security.ssl.transport.pemcert_filepath: certs/node.pem",
            "plugins.security.ssl.transport.pemkey_filepath: certs/node.key",
            "plugins.security.ssl.transport.pemtrustedcas_filepath: certs/ca.pem",
            # One node on 127.0.0.1: nodes are recognised by their DN (nodes_dn) instead.
            "plugins.security.ssl.transport.enforce_hostname_verification: false",
            "plugins.security.ssl.http.enabled: true",
            "plugins.security.ssl.http.pemcert_filepath: certs/node.pem",
            "plugins.security.ssl.http.pemkey_filepath: certs/node.key",
            "plugins.security.ssl.http.pemtrustedcas_filepath: certs/ca.pem",
            "plugins.security.allow_default_init_securityindex: true",
            f"plugins.security.nodes_dn: [{_yml(subject)}]",
            f"plugins.security.authcz.admin_dn: [{_yml(subject)}]",
            'plugins.security.restapi.roles_enabled: ["all_access"]',
            "plugins.security.system_indices.enabled: true",
            "plugins.security.audit.type: noop",
        ]
        return "\n".join(lines) + "\n"

    def _check_options(self, state: dict[str, Any], pid: int) -> None:
        super()._check_options(state, pid)
        if bool(state.get("tls")) == self.insecure:
            runs = "with TLS and users" if state.get("tls") else "without TLS (--insecure)"
            raise ServiceError(
                f"OpenSearch already runs under {self.dir} {runs} (pid {pid}); run "
                f"`stockbatch services down {self.name}` first to change it"
            )
        if self.insecure:
            self.warnings.append(INSECURE_WARNING)

    def _owns(self, cmdline: list[str]) -> bool:
        return LAUNCHER_CLASS in cmdline and str(self.config_dir) in cmdline

    def _probe_health(self, timeout: float) -> dict[str, Any] | None:
        # As admin: the loader's cluster_monitor would do, but admin also proves that
        # the security index was initialised with the generated users.
        return cluster_health(self.url, timeout, auth=self.credentials(ADMIN), ca_file=self.ca_file)

    def _ready(self, timeout: float) -> bool:
        health = self._probe_health(timeout)
        return bool(health and health.get("status") in ("yellow", "green"))

    def _awaiting(self) -> str:
        return f"report yellow/green health at {self.url}"

    def _health(self) -> tuple[bool, str]:
        color = (self._probe_health(2.0) or {}).get("status")
        if color in ("yellow", "green"):
            return True, f"{self.label} (health {color})"
        return False, f"process alive but {self.url} reports health {color or 'nothing'}"

    # -- the JVM and its files ----------------------------------------------------

    def _java_command(self, java: str, base: Path) -> list[str]:
        tmpdir = self.dir / "tmp"
        tmpdir.mkdir(parents=True, exist_ok=True)
        classpath = f"{base / 'libs'}/*"
        plugins: list[str] = []
        if not self.insecure:
            classpath += f":{base / 'security'}/*"
            plugins.append(SECURITY_PLUGIN_CLASS)
        return [
            java,
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            # The distribution's config/jvm.options, minus GC logs and heap dumps.
            "-XX:+UseG1GC",
            "-XX:G1ReservePercent=25",
            "-XX:InitiatingHeapOccupancyPercent=30",
            "-XX:+ExitOnOutOfMemoryError",
            "-XX:-OmitStackTraceInFastThrow",
            "-Xss1m",
            "-Djava.awt.headless=true",
            "-Dfile.encoding=UTF-8",
            "-Djna.nosys=true",
            "-Dio.netty.noUnsafe=true",
            "-Dio.netty.noKeySetOptimization=true",
            "-Dio.netty.recycler.maxCapacityPerThread=0",
            "-Dlog4j.shutdownHookEnabled=false",
            "-Dlog4j2.disable.jmx=true",
            "-Djava.locale.providers=SPI,COMPAT",
            f"-Djava.io.tmpdir={tmpdir}",
            "-cp",
            f"{classpath}:{_launcher_dir(base)}",
            LAUNCHER_CLASS,
            str(self.dir),
            str(self.config_dir),
            *plugins,
        ]

    def _opensearch_yml(self, state: dict[str, Any]) -> str:
        lines = [
            "# Generated by stockbatch (src/stockbatch/services/opensearch.py) at each start:",
            "# edits are overwritten.",
            "cluster.name: stockbatch",
            "node.name: stockbatch-1",
            f"path.data: {json.dumps(str(self.data_dir))}",
            f"path.logs: {json.dumps(str(self.log_file.parent))}",
            # Loopback only, secured or not (--insecure has no authentication at all).
            f"network.host: {HOST}",
            f"http.port: {state['port']}",
            f"transport.port: {state['transport_port']}",
            "discovery.type: single-node",
            # Indices are created explicitly (from the index templates), never by a typo.
            "action.auto_create_index: false",
            # A developer disk at 90 % must not turn every index read-only mid-test.
            "cluster.routing.allocation.disk.threshold_enabled: false",
            "bootstrap.memory_lock: false",
        ]
        return "\n".join(lines) + "\n"
