#!/usr/bin/env python3
"""Start, stop and inspect Airlock's local stack: real servers on loopback.

    python scripts/stack.py up [--only vault,s3,hub,airflow] [--celery]
    python scripts/stack.py down [--drop-celery-db]
    python scripts/stack.py status

``--celery``: "airflow" is Airflow on the CeleryExecutor instead -- api-server, scheduler, dag-processor,
triggerer on a PostgreSQL database of its own (AIRLOCK_CELERY_DB, created here; server AIRLOCK_POSTGRES_URL),
Redis database AIRLOCK_CELERY_REDIS_DB as the broker (AIRLOCK_REDIS_URL), PostgreSQL as the result backend, and two
Celery workers (queue "default", queue "gpu") -- on AIRLOCK_CELERY_AIRFLOW_URL (default http://127.0.0.1:8081),
beside a standalone Airflow; its state lives in AIRLOCK_CELERY_STATE_DIR (default <state>/celery, with its own
``env`` file). ``down`` stops it too.

Services (each address moves with one environment variable):

    vault    OpenBao single-node server (``bao``) AIRLOCK_VAULT_ADDR   http://127.0.0.1:8200
    s3       moto in server mode                   AIRLOCK_S3_ENDPOINT  http://127.0.0.1:9000
    hub      olah serving the demo git+LFS repos   AIRLOCK_HUB_ENDPOINT http://127.0.0.1:8090
    airflow  api-server, scheduler, dag-processor, triggerer AIRLOCK_AIRFLOW_URL  http://127.0.0.1:8080

State (PID files, logs, tokens, AIRFLOW_HOME, the olah venv) lives under
AIRLOCK_STATE_DIR (default ``<repo>/.airlock``, git-ignored). ``up`` is
idempotent: a service whose PID file names a live process of ours that answers
its health check is left alone. ``down`` stops only processes whose PID files
this script wrote. ``up`` ends by writing ``<state>/env``: shell ``export``
lines that point the CLI, scripts and tests at the stack.

Run it with the project venv's interpreter (``.venv/bin/python``): the
provisioning steps use hvac from that venv.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SIGNER_POLICY_FILE = REPO / "include" / "vault" / "airlock-signer.hcl"
SIGNER_POLICY = "airlock-signer"
KEY_ADMIN_POLICY_FILE = REPO / "include" / "vault" / "airlock-key-admin.hcl"
KEY_ADMIN_POLICY = "airlock-key-admin"
PIPELINE_APPROLE = "airlock-pipeline"
TRANSIT_MOUNT = "transit"
SIGNING_KEY = "airlock-model-signing"
AIRFLOW_ADMIN_USER = "admin"
AIRFLOW_ADMIN_PASSWORD_DEFAULT = "airlock"
# moto accepts any credentials; these are not secrets, they only satisfy boto3.
S3_TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "airlock-local", "AWS_SECRET_ACCESS_KEY": "airlock-local"}
S3_REGION = "us-east-1"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Vault credentials that never reach an Airflow process (see airflow_env).
VAULT_TOKEN_VARIABLES = ("AIRLOCK_VAULT_TOKEN", "AIRLOCK_VAULT_ADMIN_TOKEN", "VAULT_TOKEN", "BAO_TOKEN",
                         "AIRLOCK_VAULT_ROLE_ID", "AIRLOCK_VAULT_SECRET_ID")


class StackError(RuntimeError):
    """A stack operation failed; the message says what and where to look."""


@dataclass(frozen=True)
class ServiceAddress:
    name: str
    variable: str
    default: str

    @property
    def url(self) -> str:
        return os.environ.get(self.variable, self.default).rstrip("/")

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        if parts.port is None:
            raise StackError(f"{self.variable}={self.url!r} must name an explicit port")
        return parts.port


VAULT = ServiceAddress("vault", "AIRLOCK_VAULT_ADDR", "http://127.0.0.1:8200")
S3 = ServiceAddress("s3", "AIRLOCK_S3_ENDPOINT", "http://127.0.0.1:9000")
HUB = ServiceAddress("hub", "AIRLOCK_HUB_ENDPOINT", "http://127.0.0.1:8090")
AIRFLOW = ServiceAddress("airflow", "AIRLOCK_AIRFLOW_URL", "http://127.0.0.1:8080")
ADDRESSES = {a.name: a for a in (VAULT, S3, HUB, AIRFLOW)}
START_ORDER = ("vault", "s3", "hub", "airflow")


# --------------------------------------------------------------------------- state


@dataclass(frozen=True)
class State:
    root: Path

    @classmethod
    def from_env(cls) -> State:
        root = Path(os.environ.get("AIRLOCK_STATE_DIR", REPO / ".airlock")).expanduser().resolve()
        for sub in ("run", "logs", "secrets"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "secrets").chmod(0o700)
        return cls(root)

    def pidfile(self, name: str) -> Path:
        return self.root / "run" / f"{name}.pid"

    def logfile(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def secret(self, name: str) -> Path:
        return self.root / "secrets" / name

    @property
    def env_file(self) -> Path:
        return self.root / "env"

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    @property
    def hub_root(self) -> Path:
        return self.root / "hub"

    @property
    def olah_venv(self) -> Path:
        return self.root / "olah-venv"


def write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)


# --------------------------------------------------------------------------- processes


def log(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def running_pid(state: State, name: str) -> int | None:
    """The PID from ``name``'s PID file if that process is alive and is the one we started."""
    pidfile = state.pidfile(name)
    if not pidfile.exists():
        return None
    try:
        record = json.loads(pidfile.read_text())
        pid, marker = int(record["pid"]), record["marker"]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError, KeyError):
        pidfile.unlink(missing_ok=True)
        return None
    if marker not in cmdline:  # the PID was reused by something that is not ours
        pidfile.unlink(missing_ok=True)
        return None
    return pid


def spawn(state: State, name: str, argv: list[str], env: dict[str, str], marker: str, cwd: Path = REPO) -> int:
    logfile = state.logfile(name)
    with logfile.open("ab") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {name}\n".encode())
        out.flush()
        process = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: `down` stops it and its children together
        )
    state.pidfile(name).write_text(json.dumps({"pid": process.pid, "marker": marker, "argv": argv}))
    return process.pid


def log_tail(state: State, name: str, lines: int = 30) -> str:
    try:
        return "\n".join(state.logfile(name).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def process_exited(pid: int) -> bool:
    """True once ``pid`` has exited; reaps it when it is our child (a zombie still has a /proc entry)."""
    try:
        reaped, _status = os.waitpid(pid, os.WNOHANG)
        return reaped == pid
    except ChildProcessError:
        return not Path(f"/proc/{pid}").exists()


def wait_until(
    state: State, name: str, pid: int, healthy: Callable[[], bool], timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_exited(pid):
            raise StackError(
                f"{name} exited while starting; last lines of {state.logfile(name)}:\n{log_tail(state, name)}"
            )
        if healthy():
            return
        time.sleep(0.5)
    raise StackError(
        f"{name} did not become healthy ({what}) within {timeout:.0f}s; "
        f"last lines of {state.logfile(name)}:\n{log_tail(state, name)}"
    )


def http_ok(url: str, accept: Callable[[int, bytes], bool] | None = None, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback URLs we built
            body = response.read()
            return accept(response.status, body) if accept else 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def stop_process_tree(state: State, name: str, grace: float = 20.0) -> bool:
    import psutil

    pid = running_pid(state, name)
    if pid is None:
        state.pidfile(name).unlink(missing_ok=True)
        return False
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    for proc in family:  # children that left the process group (task supervisors) too
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    state.pidfile(name).unlink(missing_ok=True)
    return True


def ensure_port_free(address: ServiceAddress) -> None:
    if address.host not in LOOPBACK:
        raise StackError(f"{address.variable}={address.url}: the local stack binds loopback addresses only")
    if port_in_use(address.host, address.port):
        raise StackError(
            f"port {address.port} ({address.name}) is already in use by a process this stack did not start; "
            f"stop it or move the {address.name} with {address.variable}=http://127.0.0.1:<free port>"
        )


def run_checked(argv: list[str], env: dict[str, str] | None = None, what: str = "") -> str:
    result = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(f"{what or argv[0]} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


# --------------------------------------------------------------------------- vault (OpenBao)


def start_vault(state: State) -> None:
    """A single-node OpenBao server with file storage under the state dir.

    Not `-dev`: a dev server keeps its keys in memory, so after a restart every
    version already in the local registry would be signed by a key nobody can
    verify any more. This one is initialised once (one unseal key, kept with the
    root token in <state>/secrets, mode 0600) and unsealed on every start.
    """
    if running_pid(state, "vault") and vault_healthy():
        log(f"vault already running at {VAULT.url}")
    else:
        ensure_port_free(VAULT)
        if port_in_use(VAULT.host, VAULT.port + 1):
            raise StackError(
                f"port {VAULT.port + 1} (vault cluster port: the API port + 1) is already in use; "
                f"move the vault with AIRLOCK_VAULT_ADDR=http://127.0.0.1:<free port>"
            )
        config = write_vault_config(state)
        argv = [str(VENV_BIN / "bao"), "server", f"-config={config}"]
        pid = spawn(state, "vault", argv, dict(os.environ), marker="server -config")
        wait_until(state, "vault", pid, vault_answers, 60, f"GET {VAULT.url}/v1/sys/health")
        init_and_unseal_vault(state)
        wait_until(state, "vault", pid, vault_healthy, 60, f"GET {VAULT.url}/v1/sys/health (unsealed, active)")
        log(f"vault (OpenBao, raft storage in {state.root / 'vault'}) up at {VAULT.url}")
    provision_vault(state, state.secret("vault-root-token").read_text().strip())


def write_vault_config(state: State) -> Path:
    data = state.root / "vault" / "data"
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = state.root / "vault" / "config.hcl"
    config.write_text(
        "# Written by scripts/stack.py: the local, single-node OpenBao of the dev stack.\n"
        f'storage "raft" {{\n  path = "{data}"\n  node_id = "airlock-local"\n}}\n'
        f'listener "tcp" {{\n  address = "{VAULT.host}:{VAULT.port}"\n'
        f'  cluster_address = "{VAULT.host}:{VAULT.port + 1}"\n  tls_disable = true\n}}\n'
        f'api_addr = "{VAULT.url}"\n'
        f'cluster_addr = "http://{VAULT.host}:{VAULT.port + 1}"\n'
        "ui = false\n"
    )
    return config


def init_and_unseal_vault(state: State) -> None:
    import hvac

    client = hvac.Client(url=VAULT.url)
    unseal_file, root_file = state.secret("vault-unseal-key"), state.secret("vault-root-token")
    if not client.sys.is_initialized():
        result = client.sys.initialize(secret_shares=1, secret_threshold=1)
        write_secret(unseal_file, result["keys"][0])
        write_secret(root_file, result["root_token"])
        log("vault initialised (unseal key and root token in secrets/, mode 0600)")
    if client.sys.is_sealed():
        if not unseal_file.exists():
            raise StackError(
                f"vault at {VAULT.url} is initialised but {unseal_file} is missing; "
                f"stop the stack and remove {state.root / 'vault'} to start with a new key"
            )
        client.sys.submit_unseal_key(unseal_file.read_text().strip())


def vault_answers() -> bool:
    """The API answers at all (sealed and uninitialised servers answer /sys/health with 5xx)."""
    try:
        with urllib.request.urlopen(f"{VAULT.url}/v1/sys/health", timeout=3):  # noqa: S310 - loopback
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def vault_healthy() -> bool:
    return http_ok(f"{VAULT.url}/v1/sys/health")


def provision_vault(state: State, root_token: str) -> None:
    """Transit key, signer policy and the pipeline's AppRole; the signer token lands in the env file."""
    import hvac

    admin = hvac.Client(url=VAULT.url, token=root_token)
    if f"{TRANSIT_MOUNT}/" not in admin.sys.list_mounted_secrets_engines()["data"]:
        admin.sys.enable_secrets_engine("transit", path=TRANSIT_MOUNT)
    if not transit_key_exists(admin):
        admin.secrets.transit.create_key(
            SIGNING_KEY, key_type="ecdsa-p256", exportable=False, allow_plaintext_backup=False,
            mount_point=TRANSIT_MOUNT,
        )
    admin.sys.create_or_update_policy(SIGNER_POLICY, SIGNER_POLICY_FILE.read_text())
    admin.sys.create_or_update_policy(KEY_ADMIN_POLICY, KEY_ADMIN_POLICY_FILE.read_text())
    # Rotation is a human's job: its token stays in secrets/, never in the env file the pipeline sources.
    key_admin = admin.auth.token.create(
        policies=[KEY_ADMIN_POLICY], no_default_policy=True, ttl="72h", renewable=False,
        display_name=KEY_ADMIN_POLICY,
    )
    write_secret(state.secret("vault-key-admin-token"), key_admin["auth"]["client_token"])
    if "approle/" not in admin.sys.list_auth_methods()["data"]:
        admin.sys.enable_auth_method("approle")
    admin.auth.approle.create_or_update_approle(
        PIPELINE_APPROLE,
        token_policies=[SIGNER_POLICY],
        token_no_default_policy=True,
        token_ttl="72h",
        token_max_ttl="72h",
        token_type="service",
    )
    role_id = admin.auth.approle.read_role_id(PIPELINE_APPROLE)["data"]["role_id"]
    secret_id = admin.auth.approle.generate_secret_id(PIPELINE_APPROLE)["data"]["secret_id"]
    login = hvac.Client(url=VAULT.url).auth.approle.login(role_id=role_id, secret_id=secret_id)
    write_secret(state.secret("vault-approle.json"), json.dumps({"role_id": role_id, "secret_id": secret_id}))
    write_secret(state.secret("vault-signer-token"), login["auth"]["client_token"])
    export_trust_store(state)
    log(f"vault provisioned: transit key {SIGNING_KEY} (ecdsa-p256, non-exportable), policy {SIGNER_POLICY}, "
        f"AppRole {PIPELINE_APPROLE}, key-admin token in {state.secret('vault-key-admin-token')}")


def export_trust_store(state: State) -> None:
    """`airlock keys export` into <state>/trust.pem (AIRLOCK_TRUST_STORE): public keys only, revocations kept."""
    env = {**os.environ, "AIRLOCK_VAULT_ADDR": VAULT.url, "AIRLOCK_VAULT_TRANSIT_MOUNT": TRANSIT_MOUNT,
           "AIRLOCK_VAULT_KEY": SIGNING_KEY, "AIRLOCK_VAULT_TOKEN": state.secret("vault-signer-token").read_text().strip()}
    run_checked([str(VENV_BIN / "airlock"), "keys", "export", "--output", str(state.root / "trust.pem")], env=env,
                what="exporting the trust store (airlock keys export)")


def transit_key_exists(admin) -> bool:
    import hvac.exceptions

    try:
        admin.secrets.transit.read_key(SIGNING_KEY, mount_point=TRANSIT_MOUNT)
        return True
    except hvac.exceptions.InvalidPath:
        return False


# --------------------------------------------------------------------------- s3 (moto)


def start_s3(state: State) -> None:
    if running_pid(state, "s3") and s3_healthy():
        log(f"s3 already running at {S3.url}")
        return
    ensure_port_free(S3)
    argv = [str(VENV_BIN / "moto_server"), "-H", S3.host, "-p", str(S3.port)]
    pid = spawn(state, "s3", argv, dict(os.environ), marker="moto_server")
    wait_until(state, "s3", pid, s3_healthy, 60, f"GET {S3.url}/moto-api/")
    log(f"s3 (moto server) up at {S3.url}")


def s3_healthy() -> bool:
    return http_ok(f"{S3.url}/moto-api/")


# --------------------------------------------------------------------------- hub (olah)


def files_digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def ensure_olah_venv(state: State) -> Path:
    """olah needs a newer FastAPI than Airflow allows, so it lives in its own venv."""
    requirements = REPO / "requirements-olah.txt"
    stamp = state.olah_venv / ".airlock-requirements.sha256"
    wanted = files_digest([requirements])
    if stamp.exists() and stamp.read_text() == wanted:
        return state.olah_venv
    log("installing olah into its own venv (first run only)")
    shutil.rmtree(state.olah_venv, ignore_errors=True)
    base_python = getattr(sys, "_base_executable", sys.executable)
    run_checked([base_python, "-m", "venv", str(state.olah_venv)], what="creating the olah venv")
    pip = str(state.olah_venv / "bin" / "pip")
    run_checked([pip, "install", "--quiet", "-r", str(requirements)], what="pip install -r requirements-olah.txt")
    run_checked([pip, "check"], what="pip check in the olah venv")
    stamp.write_text(wanted)
    return state.olah_venv


def build_demo_hub(state: State) -> None:
    """(Re)build the demo git+LFS repos when the builder or its data changed; the build is deterministic."""
    inputs = [REPO / "scripts" / "demo_models.py", REPO / "scripts" / "demo_hub.py", REPO / "scripts" / "demo_derived.py",
              *sorted((REPO / "scripts" / "demo_data").rglob("*"))]
    inputs = [p for p in inputs if p.is_file()]
    stamp = state.hub_root / ".airlock-build.sha256"
    wanted = files_digest(inputs)
    if stamp.exists() and stamp.read_text() == wanted:
        return
    log("building the demo models and their git+LFS repos")
    run_checked([sys.executable, str(REPO / "scripts" / "demo_hub.py"), "build", "--root", str(state.hub_root)],
                what="building the demo hub")
    stamp.write_text(wanted)


def start_hub(state: State) -> None:
    build_demo_hub(state)
    if running_pid(state, "hub") and hub_healthy():
        log(f"hub already running at {HUB.url}")
        return
    ensure_port_free(HUB)
    venv = ensure_olah_venv(state)
    config = state.hub_root / "olah.toml"
    run_checked([sys.executable, str(REPO / "scripts" / "demo_hub.py"), "olah-config", "--root", str(state.hub_root),
                 "--host", HUB.host, "--port", str(HUB.port), "--out", str(config)], what="writing the olah config")
    argv = [str(venv / "bin" / "olah-cli"), "-c", str(config), "--log-path", str(state.hub_root / "logs")]
    pid = spawn(state, "hub", argv, dict(os.environ), marker="olah-cli")
    wait_until(state, "hub", pid, hub_healthy, 90, f"GET {HUB.url}/api/models/demo/tiny-gpt2/revision/main")
    log(f"hub (olah, offline, demo repos) up at {HUB.url}")


def hub_healthy() -> bool:
    return http_ok(f"{HUB.url}/api/models/demo/tiny-gpt2/revision/main")


# --------------------------------------------------------------------------- model proxy (airlock proxy serve)

PROXY_DEMO_CONSUMER = "demo"
# The local stack's proxy policy: `main` of the demo model is its newest approved version (docs/proxy.md).
PROXY_CONFIG = """# Written by scripts/stack.py: the local stack's model proxy policy (docs/proxy.md).
[proxy]
name = "stack-proxy"

[models."demo/tiny-gpt2"]
main = "latest"
"""


def proxy_address() -> ServiceAddress:
    return ServiceAddress("proxy", "AIRLOCK_PROXY_ADDR", "http://127.0.0.1:8300")


def start_proxy(state: State, stack_env: dict[str, str]) -> None:
    """The model proxy over the stack's registry, with one consumer ("demo") whose token is a stack secret."""
    address = proxy_address()
    if running_pid(state, "proxy") and proxy_healthy():
        log(f"proxy already running at {address.url}")
        return
    if not Path(stack_env["AIRLOCK_TRUST_STORE"]).is_file():
        log("proxy not started: no host trust store yet (it is exported when vault starts)")
        return
    ensure_port_free(address)
    airlock = str(VENV_BIN / "airlock")
    tokens = state.secret("proxy-tokens.json")
    token_file = state.secret(f"proxy-token-{PROXY_DEMO_CONSUMER}")
    if not token_file.exists():  # (re)issue: the file holds only token hashes, so a lost token cannot be recovered
        if tokens.exists():
            subprocess.run([airlock, "proxy", "token", "remove", PROXY_DEMO_CONSUMER, "--tokens", str(tokens)],
                           cwd=REPO, capture_output=True)
        token = run_checked([airlock, "proxy", "token", "add", PROXY_DEMO_CONSUMER, "--tokens", str(tokens)],
                            what="issuing the proxy's demo token").strip()
        write_secret(token_file, token)
    config = state.root / "proxy.toml"
    config.write_text(PROXY_CONFIG)
    argv = [airlock, "proxy", "serve", "--listen", f"{address.host}:{address.port}", "--tokens", str(tokens),
            "--config", str(config)]
    pid = spawn(state, "proxy", argv, {**os.environ, **stack_env}, marker="proxy serve")
    wait_until(state, "proxy", pid, proxy_healthy, 60, f"GET {address.url}/healthz")
    log(f"model proxy up at {address.url} (HF_ENDPOINT; consumer {PROXY_DEMO_CONSUMER!r}, token in {token_file})")


def proxy_healthy() -> bool:
    return http_ok(f"{proxy_address().url}/healthz")


# --------------------------------------------------------------------------- airflow


def airflow_admin_password() -> str:
    return os.environ.get("AIRLOCK_AIRFLOW_ADMIN_PASSWORD", AIRFLOW_ADMIN_PASSWORD_DEFAULT)


# Local Airflow users (simple auth manager roles). "operator" triggers and operates runs (role user: it can
# also edit XCom and task states, which is why no gate trusts them); the reviewers answer approval forms;
# "airlock-gate" is the read-only user tasks read Airflow's own records with (HITL answers, who triggered
# a run) through the `airlock_airflow` connection. "airlock-notes" writes a blocked run's reason into its note
# (role user: the least role that may edit a run; it is used for nothing else).
AIRFLOW_OPERATOR_USER = "operator"
AIRFLOW_REVIEWERS = ("reviewer", "reviewer2")
AIRFLOW_GATE_USER = "airlock-gate"
AIRFLOW_NOTES_USER = "airlock-notes"
AIRFLOW_USERS = {AIRFLOW_ADMIN_USER: "admin", AIRFLOW_OPERATOR_USER: "user",
                 **dict.fromkeys(AIRFLOW_REVIEWERS, "user"), AIRFLOW_GATE_USER: "viewer", AIRFLOW_NOTES_USER: "user"}


def airflow_passwords(state: State) -> dict[str, str]:
    """Every local user's password: admin's from the environment (default "airlock"), the others random,
    generated once and kept in <state>/secrets/airflow-passwords.json (tests and `make demo` read them there)."""
    import secrets

    try:
        known = json.loads(state.secret("airflow-passwords.json").read_text())
    except (OSError, ValueError):
        known = {}
    passwords = {user: known.get(user) or secrets.token_urlsafe(18) for user in AIRFLOW_USERS}
    passwords[AIRFLOW_ADMIN_USER] = airflow_admin_password()
    return passwords


def airflow_env(state: State, stack_env: dict[str, str], address: ServiceAddress = AIRFLOW) -> dict[str, str]:
    """Environment for every Airflow process: the repo's dags/plugins and the stack's addresses.

    ``address``: where this Airflow's API server listens (the standalone one, or the Celery mode's).
    """
    home = state.airflow_home
    env = {**os.environ, **stack_env}
    # Least privilege: tasks sign through the `airlock_vault` connection (the pipeline's AppRole) only. A Vault
    # token in the environment -- the CLI's signer token from .airlock/env, or one a developer has exported --
    # would hand every task, and every DAG author, a second identity that no connection or audit names.
    for name in VAULT_TOKEN_VARIABLES:
        env.pop(name, None)
    env.update({
        "AIRFLOW_HOME": str(home),
        # the components start sibling processes as `airflow ...` from PATH.
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in AIRFLOW_USERS.items()),
        # Every user has its own role; "all admins" would let anyone answer any approval form.
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        # Who may answer model_ingest's approval form (airlock.config; the DAG assigns the form to them).
        "AIRLOCK_REVIEWERS": ",".join(AIRFLOW_REVIEWERS),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(state.secret("airflow-passwords.json")),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{address.url}/execution/",
        "AIRFLOW__API__HOST": address.host,
        "AIRFLOW__API__PORT": str(address.port),
        "AIRFLOW__API__BASE_URL": address.url,
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(state.root / "lineage" / "openlineage.jsonl"), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "airlock-local",
    })
    (state.root / "lineage").mkdir(exist_ok=True)
    return env


def airflow_connections(state: State, address: ServiceAddress = AIRFLOW, passwords_state: State | None = None
                        ) -> dict[str, dict]:
    """The connections tasks use; ``address``/``passwords_state``: the Airflow whose API the gates read."""
    approle = json.loads(state.secret("vault-approle.json").read_text())
    return {
        "airlock_vault": {
            "conn_type": "vault",
            "host": VAULT.host,
            "port": VAULT.port,
            "schema": "http",
            "login": approle["role_id"],
            "password": approle["secret_id"],
            "extra": json.dumps({"auth_type": "approle", "kv_engine_version": 2,
                                 "transit_mount": TRANSIT_MOUNT, "signing_key": SIGNING_KEY}),
        },
        "airlock_s3": {
            "conn_type": "aws",
            "login": S3_TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "password": S3_TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "extra": json.dumps({"endpoint_url": S3.url, "region_name": S3_REGION}),
        },
        "airlock_hub": {
            "conn_type": "http",
            "host": HUB.host,
            "port": HUB.port,
            "schema": "http",
            "description": "Hugging Face-compatible hub (token, if any, in the password field)",
        },
        "airlock_airflow": {
            "conn_type": "http",
            "host": address.host,
            "port": address.port,
            "schema": "http",
            "login": AIRFLOW_GATE_USER,
            "password": airflow_passwords(passwords_state or state)[AIRFLOW_GATE_USER],
            "description": "Airflow's REST API as a read-only user: the gates read HITL answers and run records",
        },
        "airlock_airflow_notes": {
            "conn_type": "http",
            "host": address.host,
            "port": address.port,
            "schema": "http",
            "login": AIRFLOW_NOTES_USER,
            "password": airflow_passwords(passwords_state or state)[AIRFLOW_NOTES_USER],
            "description": "Airflow's REST API as the run-note writer: a blocked run's reason goes in its note",
        },
    }


def start_airflow(state: State, stack_env: dict[str, str]) -> None:
    if running_pid(state, "airflow") and airflow_healthy():
        log(f"airflow already running at {AIRFLOW.url}")
        return
    ensure_port_free(AIRFLOW)
    state.airflow_home.mkdir(exist_ok=True)
    write_secret(state.secret("airflow-passwords.json"), json.dumps(airflow_passwords(state)))
    env = airflow_env(state, stack_env)
    airflow = str(VENV_BIN / "airflow")
    provision_airflow(state, env, airflow_connections(state))
    pid = spawn(state, "airflow", airflow_components_argv(airflow), env, marker=AIRFLOW_MARKER)
    wait_until(state, "airflow", pid, airflow_healthy, 240, f"GET {AIRFLOW.url}/api/v2/monitor/health")
    log(f"airflow up at {AIRFLOW.url} (login {AIRFLOW_ADMIN_USER} / {airflow_admin_password()})")


AIRFLOW_MARKER = "airlock-airflow-components"


def airflow_components_argv(airflow: str) -> list[str]:
    """One process group running what `airflow standalone` runs, with the log servers switched off.

    The scheduler and triggerer would otherwise serve task logs on every interface (ports 8793/8794; Airflow 3.3
    has no setting for their bind address). With the LocalExecutor every log is a file under AIRFLOW_HOME that the
    API server reads directly, so nothing needs those servers. If any component exits, the group is stopped, so a
    half-running Airflow never looks healthy for long.
    """
    components = [
        [airflow, "api-server"],
        [airflow, "scheduler", "--skip-serve-logs"],
        [airflow, "dag-processor"],
        [airflow, "triggerer", "--skip-serve-logs"],
    ]
    script = "trap 'kill 0' EXIT\n" + "".join(f"{shlex.join(argv)} &\n" for argv in components) + "wait -n\n"
    return ["bash", "-c", script, AIRFLOW_MARKER]


def airflow_healthy() -> bool:
    def all_healthy(status: int, body: bytes) -> bool:
        try:
            health = json.loads(body)
        except ValueError:
            return False
        components = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return status == 200 and all(
            (health.get(c) or {}).get("status") == "healthy" for c in components
        )

    return http_ok(f"{AIRFLOW.url}/api/v2/monitor/health", all_healthy)


# --------------------------------------------------------------------------- airflow on Celery (`up --celery`)
#
# The production shape of docker-compose.yaml on loopback, beside the standalone Airflow: api-server, scheduler,
# dag-processor and triggerer on a PostgreSQL database of their own (created here), Redis (a db number of its own)
# as the Celery broker, PostgreSQL as the result backend, and two Celery workers -- one on the default queue, one
# consuming only `gpu` -- each its own process group, with its own host name (its own UTS namespace where the
# kernel lets us, like a container), its own AIRFLOW_HOME and working directory. What they share is what
# production's workers share: the quarantine volume, the registry, the task-log volume, and the connections
# (served by the API server from the metadata database, never from a worker's environment).

CELERY_AIRFLOW = ServiceAddress("airflow-celery", "AIRLOCK_CELERY_AIRFLOW_URL", "http://127.0.0.1:8081")


@dataclass(frozen=True)
class ResolvedAddress(ServiceAddress):
    """An address read from the environment once: a running stack keeps the port it was started on."""

    resolved: str = ""

    @property
    def url(self) -> str:
        return self.resolved

    @classmethod
    def of(cls, address: ServiceAddress) -> ResolvedAddress:
        return cls(address.name, address.variable, address.default, resolved=address.url)
POSTGRES_ADMIN_URL_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL_DEFAULT = "redis://127.0.0.1:6379"
CELERY_REDIS_DB_DEFAULT = 5
CELERY_DATABASE_DEFAULT = "airlock_airflow_celery"
DEFAULT_QUEUE = "default"
GPU_QUEUE = "gpu"
DATABASE_NAME_PATTERN = r"[a-z_][a-z0-9_]{0,62}"
CELERY_CONTROL_PLANE = ("apiserver", "scheduler", "dag-processor", "triggerer")


@dataclass(frozen=True)
class CeleryWorker:
    """One Celery worker: ``name`` names its PID file and log, ``hostname`` the host it runs as and its node."""

    name: str
    queues: tuple[str, ...]
    concurrency: int
    hostname: str

    @property
    def node(self) -> str:
        return f"{self.name}@{self.hostname}"


@dataclass(frozen=True)
class CeleryStack:
    """Where one Celery-mode Airflow keeps its state and which database, broker and port it uses.

    ``state`` (AIRLOCK_CELERY_STATE_DIR, default <state>/celery) holds its PID files, logs, secrets, AIRFLOW_HOME
    and the workers' directories; ``shared`` is the main stack's state (Vault AppRole, trust store, hub).
    """

    state: State
    shared: State
    address: ServiceAddress
    database: str
    postgres_admin_url: str
    broker_url: str
    workers: tuple[CeleryWorker, ...]

    @classmethod
    def from_env(cls, shared: State) -> CeleryStack:
        import re

        root = Path(os.environ.get("AIRLOCK_CELERY_STATE_DIR", shared.root / "celery")).expanduser().resolve()
        for sub in ("run", "logs", "secrets"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "secrets").chmod(0o700)
        database = os.environ.get("AIRLOCK_CELERY_DB", CELERY_DATABASE_DEFAULT)
        if not re.fullmatch(DATABASE_NAME_PATTERN, database):
            raise StackError(f"AIRLOCK_CELERY_DB={database!r}: use lower-case letters, digits and _ (at most 63)")
        redis_db = os.environ.get("AIRLOCK_CELERY_REDIS_DB", str(CELERY_REDIS_DB_DEFAULT))
        if not redis_db.isdigit():
            raise StackError(f"AIRLOCK_CELERY_REDIS_DB={redis_db!r}: a Redis database number")
        redis_url = os.environ.get("AIRLOCK_REDIS_URL", REDIS_URL_DEFAULT).rstrip("/")
        tag = database.removeprefix("airlock_airflow_").replace("_", "-")
        concurrency = int(os.environ.get("AIRLOCK_CELERY_CONCURRENCY", "4"))
        return cls(
            state=State(root),
            shared=shared,
            address=ResolvedAddress.of(CELERY_AIRFLOW),
            database=database,
            postgres_admin_url=os.environ.get("AIRLOCK_POSTGRES_URL", POSTGRES_ADMIN_URL_DEFAULT),
            broker_url=f"{redis_url}/{redis_db}",
            workers=(
                CeleryWorker("worker-default", (DEFAULT_QUEUE,), concurrency, f"airlock-{tag}-cpu"),
                # One task at a time: evaluations must not contend for one GPU's memory (as in compose).
                CeleryWorker("worker-gpu", (GPU_QUEUE,), 1, f"airlock-{tag}-gpu"),
            ),
        )

    def database_url(self, scheme: str = "postgresql+psycopg2") -> str:
        parts = urlsplit(self.postgres_admin_url)
        return parts._replace(scheme=scheme, path=f"/{self.database}").geturl()

    @property
    def airflow_home(self) -> Path:
        return self.state.airflow_home

    @property
    def log_folder(self) -> Path:
        """Task logs: the one volume every component shares (compose's airflow-logs), read by the API server."""
        return self.state.airflow_home / "logs"

    def worker_dir(self, worker: CeleryWorker) -> Path:
        return self.state.root / "workers" / worker.name

    def marker(self, component: str) -> str:
        return f"airlock-celery-{self.database}-{component}"

    @property
    def env_file(self) -> Path:
        return self.state.env_file

    def worker(self, name: str) -> CeleryWorker:
        return next(w for w in self.workers if w.name == name)


def postgres_connect(admin_url: str):
    import psycopg

    return psycopg.connect(admin_url, autocommit=True, connect_timeout=5)


def ensure_database(stack: CeleryStack) -> bool:
    """Create the stack's metadata database if it does not exist; True when it was created."""
    from psycopg import sql

    try:
        with postgres_connect(stack.postgres_admin_url) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (stack.database,)).fetchone():
                return False
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(stack.database)))
            return True
    except Exception as exc:  # noqa: BLE001 - psycopg's errors; the message names the server, not credentials
        raise StackError(f"PostgreSQL at {redact_url(stack.postgres_admin_url)}: {type(exc).__name__}: {exc}") from None


def drop_database(stack: CeleryStack) -> None:
    from psycopg import sql

    with postgres_connect(stack.postgres_admin_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(stack.database)))


def flush_broker(stack: CeleryStack) -> None:
    """Empty the stack's Redis database (queued tasks, results of worker control): only its own number."""
    import redis

    redis.Redis.from_url(stack.broker_url, socket_timeout=5).flushdb()


def broker_reachable(stack: CeleryStack) -> None:
    import redis

    try:
        redis.Redis.from_url(stack.broker_url, socket_timeout=5).ping()
    except redis.RedisError as exc:
        raise StackError(f"Redis at {redact_url(stack.broker_url)}: {type(exc).__name__}: {exc}") from None


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        parts = parts._replace(netloc=f"{parts.username}:***@{parts.hostname}:{parts.port}")
    return parts.geturl()


def celery_keys(stack: CeleryStack) -> dict[str, str]:
    """Fernet key, JWT secret and API secret every component of one Airflow must share (generated once)."""
    import secrets

    from cryptography.fernet import Fernet

    path = stack.state.secret("airflow-keys.json")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        keys = {"fernet_key": Fernet.generate_key().decode(), "jwt_secret": secrets.token_urlsafe(32),
                "api_secret_key": secrets.token_urlsafe(32)}
        write_secret(path, json.dumps(keys))
        return keys


def celery_airflow_env(stack: CeleryStack, stack_env: dict[str, str]) -> dict[str, str]:
    """airflow_env for the Celery mode: Postgres, Redis, shared keys, one task-log folder, no env connections."""
    env = airflow_env(stack.state, stack_env, stack.address)
    # Connections and variables come from the metadata database through the API server, as in production; a
    # developer's AIRFLOW_CONN_* (the tests export one for in-process runs) must not shadow them in a worker.
    for name in [n for n in env if n.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))]:
        env.pop(name)
    keys = celery_keys(stack)
    env.update({
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": stack.database_url(),
        "AIRFLOW__CELERY__BROKER_URL": stack.broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{stack.database_url('postgresql')}",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": DEFAULT_QUEUE,
        "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
        "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(stack.log_folder),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    })
    return env


def celery_control_plane_argv(airflow: str) -> dict[str, list[str]]:
    # No log servers (see airflow_components_argv): every task log is in the shared folder the API server reads.
    return {
        "apiserver": [airflow, "api-server"],
        "scheduler": [airflow, "scheduler", "--skip-serve-logs"],
        "dag-processor": [airflow, "dag-processor"],
        "triggerer": [airflow, "triggerer", "--skip-serve-logs"],
    }


def celery_worker_argv(airflow: str, worker: CeleryWorker) -> list[str]:
    return [airflow, "celery", "worker", "--queues", ",".join(worker.queues), "--concurrency",
            str(worker.concurrency), "--celery-hostname", worker.node, "--skip-serve-logs"]


def supervised(argv: list[str], marker: str, hostname: str | None = None) -> list[str]:
    """``argv`` under a bash that carries ``marker`` (PID checks) and stops the component when it exits.

    With ``hostname``, the component runs in a UTS namespace of its own under that host name (what a container
    gives each worker, and what Airflow records as the task instance's hostname), when unshare is permitted.
    """
    script = f"trap 'kill 0' EXIT\n{shlex.join(argv)} &\nwait -n\n"
    if hostname and own_uts_namespace_available():
        return ["unshare", "--uts", "bash", "-c", f"hostname {shlex.quote(hostname)}\n{script}", marker]
    return ["bash", "-c", script, marker]


def own_uts_namespace_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--uts", "hostname", "airlock-probe"], capture_output=True)
    return probe.returncode == 0


def celery_control_plane_healthy(stack: CeleryStack) -> bool:
    def all_healthy(status: int, body: bytes) -> bool:
        try:
            health = json.loads(body)
        except ValueError:
            return False
        return status == 200 and all((health.get(c) or {}).get("status") == "healthy"
                                     for c in ("metadatabase", "scheduler", "triggerer", "dag_processor"))

    return http_ok(f"{stack.address.url}/api/v2/monitor/health", all_healthy)


def celery_worker_ready(stack: CeleryStack, worker: CeleryWorker, log_offset: int) -> bool:
    """Celery logs ``<node> ready.`` once the worker consumes its queues."""
    try:
        with stack.state.logfile(worker.name).open("rb") as handle:
            handle.seek(log_offset)
            return f"{worker.node} ready.".encode() in handle.read()
    except OSError:
        return False


def start_celery_worker(stack: CeleryStack, worker: CeleryWorker, env: dict[str, str], timeout: float = 180) -> int:
    """Start one worker in a fresh working directory (also its AIRFLOW_HOME); wait until it consumes."""
    pid = running_pid(stack.state, worker.name)
    if pid is not None:
        return pid
    workdir = stack.worker_dir(worker)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True, mode=0o700)
    worker_env = {**env, "AIRFLOW_HOME": str(workdir)}
    logfile = stack.state.logfile(worker.name)
    offset = logfile.stat().st_size if logfile.exists() else 0
    argv = supervised(celery_worker_argv(str(VENV_BIN / "airflow"), worker), stack.marker(worker.name),
                      hostname=worker.hostname)
    pid = spawn(stack.state, worker.name, argv, worker_env, marker=stack.marker(worker.name), cwd=workdir)
    wait_until(stack.state, worker.name, pid, lambda: celery_worker_ready(stack, worker, offset), timeout,
               f"'{worker.node} ready.' in its log")
    log(f"celery worker {worker.node} (queues {','.join(worker.queues)}, concurrency {worker.concurrency}) up")
    return pid


def start_celery_component(stack: CeleryStack, component: str, env: dict[str, str]) -> int:
    pid = running_pid(stack.state, component)
    if pid is not None:
        return pid
    argv = celery_control_plane_argv(str(VENV_BIN / "airflow"))[component]
    return spawn(stack.state, component, supervised(argv, stack.marker(component)), env,
                 marker=stack.marker(component), cwd=stack.airflow_home)


def start_celery_airflow(stack: CeleryStack, stack_env: dict[str, str], timeout: float = 240) -> None:
    """Migrate the stack's database, provision connections/users/pools, start every component and both workers."""
    if all(running_pid(stack.state, c) for c in CELERY_CONTROL_PLANE) and celery_control_plane_healthy(stack):
        log(f"airflow (celery) already running at {stack.address.url}")
    else:
        ensure_port_free(stack.address)
        broker_reachable(stack)
        if ensure_database(stack):
            log(f"created PostgreSQL database {stack.database}")
        stack.airflow_home.mkdir(parents=True, exist_ok=True)
        stack.log_folder.mkdir(parents=True, exist_ok=True)
        write_secret(stack.state.secret("airflow-passwords.json"), json.dumps(airflow_passwords(stack.state)))
        env = celery_airflow_env(stack, stack_env)
        provision_airflow(stack.state, env, airflow_connections(stack.shared, stack.address, stack.state))
        pids = {c: start_celery_component(stack, c, env) for c in CELERY_CONTROL_PLANE}
        deadline = time.monotonic() + timeout
        while not celery_control_plane_healthy(stack):
            for component, pid in pids.items():
                if process_exited(pid):
                    raise StackError(f"{component} exited while starting; last lines of "
                                     f"{stack.state.logfile(component)}:\n{log_tail(stack.state, component)}")
            if time.monotonic() > deadline:
                raise StackError(f"airflow (celery) at {stack.address.url} not healthy within {timeout:.0f}s; logs in "
                                 f"{stack.state.root / 'logs'}")
            time.sleep(1)
    env = celery_airflow_env(stack, stack_env)
    for worker in stack.workers:
        start_celery_worker(stack, worker, env)
    write_celery_env_file(stack, stack_env)
    log(f"airflow (CeleryExecutor, db {stack.database}, broker {redact_url(stack.broker_url)}) up at "
        f"{stack.address.url} (login {AIRFLOW_ADMIN_USER} / {airflow_admin_password()}); env in {stack.env_file}")


def provision_airflow(state: State, env: dict[str, str], connections: dict[str, dict]) -> None:
    """Migrate the metadata DB, import the connections, create the pools the DAGs name (all idempotent)."""
    airflow = str(VENV_BIN / "airflow")
    log(f"migrating the Airflow metadata database ({state.root})")
    run_checked([airflow, "db", "migrate"], env=env, what="airflow db migrate")
    connections_file = state.secret("airflow-connections.json")
    write_secret(connections_file, json.dumps(connections))
    try:
        run_checked([airflow, "connections", "import", "--overwrite", str(connections_file)], env=env,
                    what="airflow connections import")
    finally:
        connections_file.unlink(missing_ok=True)
    # dags/model_integrity_watch.py bounds its re-hashing through this pool; a task naming a pool that does not
    # exist is never scheduled, so the pool is created (idempotently: `set` updates) with the connections.
    run_checked([airflow, "pools", "set", "integrity_watch", "2", "integrity watch: targets re-hashed at once"],
                env=env, what="airflow pools set integrity_watch")


def write_celery_env_file(stack: CeleryStack, stack_env: dict[str, str]) -> None:
    """<celery state>/env: the main stack's env pointed at this Airflow (its URL, home and database)."""
    write_env_file(stack.state, {
        **stack_env,
        "AIRLOCK_AIRFLOW_URL": stack.address.url,
        "AIRLOCK_CELERY_STATE_DIR": str(stack.state.root),
        "AIRFLOW_HOME": str(stack.airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": stack.database_url(),
    })


def stop_celery_airflow(stack: CeleryStack, *, drop: bool = False) -> list[str]:
    """Stop the workers, then the control plane; ``drop``: also drop the database and empty the broker db."""
    from concurrent.futures import ThreadPoolExecutor

    def stop_all(names: list[str]) -> list[str]:  # at once: each may take its grace period to go
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            return [n for n, done in zip(names, pool.map(lambda n: stop_process_tree(stack.state, n), names)) if done]

    stopped = stop_all([w.name for w in stack.workers])  # first: no worker takes a task from a stopping scheduler
    stopped += stop_all(list(reversed(CELERY_CONTROL_PLANE)))
    shutil.rmtree(stack.state.root / "workers", ignore_errors=True)
    if drop:
        drop_database(stack)
        flush_broker(stack)
    return stopped


def celery_status(stack: CeleryStack) -> bool:
    healthy_plane = celery_control_plane_healthy(stack)
    all_up = True
    for name in (*CELERY_CONTROL_PLANE, *(w.name for w in stack.workers)):
        pid = running_pid(stack.state, name)
        healthy = pid is not None and (healthy_plane if name in CELERY_CONTROL_PLANE else True)
        all_up &= healthy
        status = "healthy" if healthy else ("running, unhealthy" if pid else "stopped")
        print(f"celery {name:15} {status:20} {stack.address.url}  pid={pid or '-'}  log={stack.state.logfile(name)}")
    return all_up



# --------------------------------------------------------------------------- env file


def stack_environment(state: State) -> dict[str, str]:
    env = {
        "AIRLOCK_STATE_DIR": str(state.root),
        "AIRLOCK_VAULT_ADDR": VAULT.url,
        "AIRLOCK_VAULT_TRANSIT_MOUNT": TRANSIT_MOUNT,
        "AIRLOCK_VAULT_KEY": SIGNING_KEY,
        "AIRLOCK_S3_ENDPOINT": S3.url,
        "AWS_DEFAULT_REGION": S3_REGION,
        **S3_TEST_CREDENTIALS,
        "AIRLOCK_HUB_ENDPOINT": HUB.url,
        "AIRLOCK_PROXY_ADDR": proxy_address().url,
        "AIRLOCK_AIRFLOW_URL": AIRFLOW.url,
        "AIRLOCK_REGISTRY": os.environ.get("AIRLOCK_REGISTRY", str(state.root / "registry")),
        "AIRLOCK_QUARANTINE_ROOT": os.environ.get("AIRLOCK_QUARANTINE_ROOT", str(state.root / "quarantine")),
        # The host trust store pulls, loads and the DAG verify with (never the registry's own copy): the
        # `airlock keys export` file provision_vault writes. And where this host remembers verified index heads.
        "AIRLOCK_TRUST_STORE": str(state.root / "trust.pem"),
        "AIRLOCK_HOST_STATE": os.environ.get("AIRLOCK_HOST_STATE", str(state.root / "host-state")),
        "AIRFLOW_HOME": str(state.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    token_file = state.secret("vault-signer-token")
    if token_file.exists():
        env["AIRLOCK_VAULT_TOKEN"] = token_file.read_text().strip()
    return env


def write_env_file(state: State, env: dict[str, str]) -> None:
    lines = ["# Written by `make stack-up` (scripts/stack.py). Source it: . .airlock/env"]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in sorted(env.items())]
    write_secret(state.env_file, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------- commands


def cmd_up(services: list[str], celery: bool = False) -> None:
    """``celery``: "airflow" is the Celery-mode Airflow (beside a standalone one, never instead of it)."""
    state = State.from_env()
    if "vault" in services:
        start_vault(state)
    if "s3" in services:
        start_s3(state)
    if "hub" in services:
        start_hub(state)
    env = stack_environment(state)
    write_env_file(state, env)
    if "vault" in services:  # the proxy verifies with the trust store the vault step exports
        start_proxy(state, env)
    if "airflow" in services and celery:
        start_celery_airflow(CeleryStack.from_env(state), env)
    elif "airflow" in services:
        start_airflow(state, env)
    log(f"environment written to {state.env_file}")


def cmd_down(drop_celery_db: bool = False) -> None:
    state = State.from_env()
    celery = CeleryStack.from_env(state)
    for name in stop_celery_airflow(celery, drop=drop_celery_db):
        log(f"stopped celery {name}")
    if drop_celery_db:
        log(f"dropped database {celery.database} and emptied {redact_url(celery.broker_url)}")
    if stop_process_tree(state, "proxy"):
        log("stopped proxy")
    for name in reversed(START_ORDER):
        if stop_process_tree(state, name):
            log(f"stopped {name}")


def cmd_status() -> int:
    state = State.from_env()
    checks = {"vault": vault_healthy, "s3": s3_healthy, "hub": hub_healthy, "airflow": airflow_healthy}
    all_up = True
    for name in START_ORDER:
        pid = running_pid(state, name)
        healthy = pid is not None and checks[name]()
        all_up &= healthy
        status = "healthy" if healthy else ("running, unhealthy" if pid else "stopped")
        print(f"{name:8} {status:20} {ADDRESSES[name].url}  pid={pid or '-'}  log={state.logfile(name)}")
    proxy_pid = running_pid(state, "proxy")
    print(f"{'proxy':8} {('healthy' if proxy_pid and proxy_healthy() else 'stopped'):20} {proxy_address().url}  "
          f"pid={proxy_pid or '-'}  log={state.logfile('proxy')}")
    celery = CeleryStack.from_env(state)
    if any(running_pid(celery.state, n) for n in (*CELERY_CONTROL_PLANE, *(w.name for w in celery.workers))):
        all_up &= celery_status(celery)
    return 0 if all_up else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the stack (idempotent) and write <state>/env")
    up.add_argument("--only", default=",".join(START_ORDER),
                    help=f"comma-separated subset of {','.join(START_ORDER)}")
    up.add_argument("--celery", action="store_true",
                    help="airflow on the CeleryExecutor (Postgres, Redis, a default and a gpu worker) on "
                         "AIRLOCK_CELERY_AIRFLOW_URL, beside the standalone one")
    down = sub.add_parser("down", help="stop what `up` started")
    down.add_argument("--drop-celery-db", action="store_true",
                      help="also drop the Celery mode's PostgreSQL database and empty its Redis database")
    sub.add_parser("status", help="show each service; exit 1 unless all are healthy")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            services = [s.strip() for s in args.only.split(",") if s.strip()]
            unknown = sorted(set(services) - set(START_ORDER))
            if unknown:
                parser.error(f"unknown service(s): {', '.join(unknown)}")
            cmd_up(services, celery=args.celery)
        elif args.command == "down":
            cmd_down(drop_celery_db=args.drop_celery_db)
        else:
            return cmd_status()
    except StackError as exc:
        print(f"[stack] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
