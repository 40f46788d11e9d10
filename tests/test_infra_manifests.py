"""The deployment manifests in infra/ cannot run here; these checks keep them in step with the code:
every environment name is one that metaauto, MLflow or Prefect actually reads, ports agree end to end,
images and pool names match, published ports bind loopback, and no secret is written into the repo."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
SECRETISH = re.compile(r"PASSWORD|SECRET|AUTH_STRING|TOKEN|_KEY$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def job_template() -> dict:
    return yaml.safe_load((INFRA / "k8s" / "base-job-template.yaml").read_text())


@pytest.fixture(scope="module")
def helm_values() -> dict:
    return yaml.safe_load((INFRA / "k8s" / "prefect-worker-values.yaml").read_text())


def _env_read_by_metaauto() -> set[str]:
    """Names the package reads from the environment (``os.environ.get("X")`` or a ``*_ENV = "X"`` constant)."""
    names: set[str] = set()
    for path in (REPO / "metaauto").rglob("*.py"):
        text = path.read_text()
        names |= set(re.findall(r"environ(?:\.get\(|\[)\s*[\"']([A-Z0-9_]+)[\"']", text))
        names |= set(re.findall(r"^[A-Z_]*ENV\s*=\s*[\"']([A-Z0-9_]+)[\"']", text, flags=re.M))
    return names


def _known_env() -> set[str]:
    import mlflow.environment_variables as mlflow_env
    from prefect.settings import Settings
    from prefect.settings.legacy import _get_valid_setting_names

    known = {n for n in dir(mlflow_env) if n.startswith("MLFLOW_")}
    known |= set(_get_valid_setting_names(Settings))
    known |= {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}  # the postgres image
    return known | _env_read_by_metaauto()


def _env_dicts(compose: dict) -> dict[str, dict[str, str]]:
    return {name: {k: str(v) for k, v in (svc.get("environment") or {}).items()} for name, svc in compose["services"].items()}


def _k8s_env(job_template: dict) -> list[dict]:
    container = job_template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    return container["env"]


def test_metaauto_reads_the_settings_the_manifests_set():
    read = _env_read_by_metaauto()
    assert {"MLFLOW_TRACKING_URI", "METAAUTO_HOME", "METAAUTO_DATA_DIR", "METAAUTO_SEARCH_STORAGE"} <= read


def test_every_environment_name_is_read_by_someone(compose, job_template, helm_values):
    known = _known_env()
    names = {k for env in _env_dicts(compose).values() for k in env}
    names |= {e["name"] for e in _k8s_env(job_template)}
    names |= {e["name"] for e in helm_values["worker"]["extraEnvVars"]}
    unknown = sorted(names - known)
    assert not unknown, f"environment names nobody reads (typo or renamed setting?): {unknown}"


def test_no_credentials_in_the_repo(compose, job_template):
    text = (INFRA / "docker-compose.yml").read_text()
    for ref in re.findall(r"\$\{([^}]*)\}", text):
        assert ":?" in ref, f"${{{ref}}} must fail when unset (use ${{VAR:?message}}), never fall back to a default"
    for service, env in _env_dicts(compose).items():
        for key, value in env.items():
            if SECRETISH.search(key):
                assert value.startswith("${") and ":?" in value, f"{service}: {key} holds a literal value"
            for url in re.findall(r"\w+(?:\+\w+)?://[^\s\"']+", value):
                user_info = urlparse(url.replace("${", "").replace("}", "")).password
                assert user_info is None or ":?" in value, f"{service}: {key} embeds a password"
    for entry in _k8s_env(job_template):
        if SECRETISH.search(entry["name"]) or entry["name"] == "METAAUTO_SEARCH_STORAGE":
            assert "secretKeyRef" in entry.get("valueFrom", {}), f"{entry['name']} must come from a Secret"
    example = (INFRA / "mlflow-basic-auth.ini.example").read_text()
    assert "admin_password = CHANGE-ME" in example and not (INFRA / "mlflow-basic-auth.ini").exists()


def test_published_ports_bind_loopback(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def _arg(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_ports_and_urls_agree(compose):
    services, env = compose["services"], _env_dicts(compose)
    mlflow = services["mlflow"]["command"]
    uri = urlparse(env["worker"]["MLFLOW_TRACKING_URI"])
    assert (uri.hostname, uri.port) == ("mlflow", int(_arg(mlflow, "--port")))
    assert services["mlflow"]["ports"] == [f"127.0.0.1:{uri.port}:{uri.port}"]
    prefect = env["prefect"]
    api = urlparse(env["worker"]["PREFECT_API_URL"])
    assert (api.hostname, api.port, api.path) == ("prefect", int(prefect["PREFECT_SERVER_API_PORT"]), "/api")
    assert services["prefect"]["ports"] == [f"127.0.0.1:{api.port}:{api.port}"]
    # the API auth string the clients send is the one the server expects
    assert env["worker"]["PREFECT_API_AUTH_STRING"] == prefect["PREFECT_SERVER_API_AUTH_STRING"]
    # every database URL points at the postgres service and a database the init script creates
    created = set(re.findall(r"CREATE DATABASE (\w+)", (INFRA / "postgres-init.sql").read_text()))
    urls = [_arg(mlflow, "--backend-store-uri"), prefect["PREFECT_API_DATABASE_CONNECTION_URL"],
            env["worker"]["METAAUTO_SEARCH_STORAGE"]]
    for url in urls:
        parsed = urlparse(url.replace("${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}", "pw"))
        assert (parsed.hostname, parsed.port, parsed.username) == ("postgres", 5432, services["postgres"]["environment"]["POSTGRES_USER"])
        assert parsed.path.lstrip("/") in created


def test_mlflow_server_runs_the_basic_auth_app(compose):
    from importlib.metadata import entry_points

    command = compose["services"]["mlflow"]["command"]
    app = _arg(command, "--app-name")
    assert app == "basic-auth" and app in {e.name for e in entry_points(group="mlflow.app")}
    assert "--serve-artifacts" in command
    assert compose["services"]["mlflow"]["environment"]["MLFLOW_AUTH_CONFIG_PATH"] in " ".join(compose["services"]["mlflow"]["volumes"])


def test_dashboard_service_matches_the_cli(compose):
    import typer.main

    from metaauto.cli import app

    command = typer.main.get_command(app).commands["dashboard"]
    options = {opt for p in command.params for opt in getattr(p, "opts", ())}
    service = compose["services"]["dashboard"]
    args = service["command"]
    assert args[:2] == ["metaauto", "dashboard"]
    assert {a for a in args[2:] if a.startswith("--")} <= options
    port = _arg(args, "--port")
    assert service["ports"] == [f"127.0.0.1:{port}:{port}"]
    defaults = {p.name: p.default for p in command.params}
    assert defaults["host"] == "127.0.0.1"  # loopback unless configured


def test_images_and_pools_match(compose, job_template, helm_values):
    dockerfile = (INFRA / "Dockerfile").read_text()
    services = compose["services"]
    built = {services[s]["image"] for s in services if "build" in services[s]}
    assert built == {"metaauto-worker:latest"}
    assert services["worker"]["image"] == services["dashboard"]["image"] == "metaauto-worker:latest"
    assert services["worker"]["build"]["dockerfile"] == "infra/Dockerfile"
    for copied in re.findall(r"^COPY (.+) \./?\S*$", dockerfile, flags=re.M):
        for path in copied.split():
            assert (REPO / path).exists(), f"Dockerfile copies {path}, which the repo lacks"
    repo, tag = services["worker"]["image"].split(":")
    assert job_template["variables"]["properties"]["image"]["default"] == f"{repo}:{tag}"
    assert (helm_values["worker"]["image"]["repository"], helm_values["worker"]["image"]["prefectTag"]) == (repo, tag)
    pool = _arg(services["worker"]["command"], "--pool")
    assert f'"--pool", "{pool}"' in dockerfile
    assert helm_values["worker"]["config"]["type"] == "kubernetes"


def test_kubernetes_jobs_request_gpus_and_every_placeholder_is_a_variable(job_template):
    container = job_template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "{{ gpus }}"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpus }}"
    variables = job_template["variables"]["properties"]
    assert variables["gpus"]["type"] == "integer" and variables["gpus"]["default"] >= 1
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", yaml.safe_dump(job_template["job_configuration"])))
    assert used <= set(variables), f"placeholders without a variable: {sorted(used - set(variables))}"
    env = {e["name"]: e for e in container["env"]}
    assert urlparse(env["MLFLOW_TRACKING_URI"]["value"]).port == 5000
    assert urlparse(env["PREFECT_API_URL"]["value"]).path == "/api"


def test_task_workers_run_a_module_of_the_image_and_share_the_task_run_storage(compose):
    """Background task runs carry their parameters through the block `stack configure` points at
    $METAAUTO_HOME/stack/task-runs: whoever submits (process workers' flow runs) and whoever runs them
    (task workers) must mount the same volume there, and the modules must be in the image."""
    import typer.main

    from metaauto.cli import app
    from metaauto.platform.workers import task_worker_command

    services, dockerfile = compose["services"], (INFRA / "Dockerfile").read_text()
    command = services["task-worker"]["command"]
    assert command[:3] == ["python", "-m", "flows.task_worker"]
    assert (REPO / "flows" / "task_worker.py").is_file() and "COPY flows ./flows" in dockerfile
    assert command[1:] == task_worker_command(1)[1:], "compose runs the task worker `metaauto stack up` runs"
    home = _env_dicts(compose)["task-worker"]["METAAUTO_HOME"]
    mounts = {name: {v.split(":")[0] for v in services[name].get("volumes", []) if v.split(":")[1] == f"{home}/stack/task-runs"}
              for name in ("setup", "worker", "task-worker")}
    assert all(m == {"task-runs"} for m in mounts.values()), mounts
    setup = services["setup"]["command"]
    configure = typer.main.get_command(app).commands["stack"].commands["configure"]
    assert setup[:3] == ["metaauto", "stack", "configure"]
    assert {a for a in setup[3:] if a.startswith("--")} <= {o for p in configure.params for o in getattr(p, "opts", ())}
    assert _arg(setup, "--pool") == _arg(services["worker"]["command"], "--pool")
