"""deploy/ checked against the code, without a container engine or a cluster.

docker-compose.yml is parsed with PyYAML (and interpolated the way Compose
does), the Dockerfile as text, the Kubernetes manifests in deploy/k8s/ with
PyYAML too (and rendered with `kubectl kustomize` when kubectl is installed).
Every name the deployment mentions — setting, module, console script, Celery
app, queue, port, route, credential, bucket, label, object — must be one the
code (or another manifest) has, so renaming any of them in services/ fails
here. The health checks the containers run — the gRPC one
(services/shared/healthcheck.py) and the `python -c` HTTP and beat-schedule
probes — are run against live servers and files.
"""

from __future__ import annotations

import base64
import copy
import functools
import importlib.util
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from services.content.events import TASKS_FOR_TOPIC
from services.shared import healthcheck
from services.shared.grpcserver import GrpcServer
from services.shared.settings import SETTINGS, load_settings

from . import infra

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
SETTING_NAMES = frozenset(s.env for s in SETTINGS)
SETTING_DEFAULTS = {s.env: s.default for s in SETTINGS}

# What `docker compose up` is given from deploy/.env in these tests.
COMPOSE_ENV = {"CONTENTOPS_SECRET_KEY": "compose-test-secret"}

# Third-party images and the environment variables their documentation defines.
THIRD_PARTY_ENV = {
    "postgres": ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "POSTGRES_INITDB_ARGS", "PGDATA"),
    "minio/minio": ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "MINIO_REGION", "MINIO_BROWSER"),
    "minio/mc": ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"),  # read by our own `sh -c` script
    "redis": (),
}
# Environment a Dockerfile may set besides settings.
IMAGE_ENV = {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"}
WILDCARD_HOSTS = {"0.0.0.0", "[::]", "::", ""}
EXPECTED_SERVICES = {"postgres", "redis", "minio", "minio-init", "migrate", "content", "distribution", "tracking",
                     "tracking-consumer", "worker", "beat", "web"}
CONTAINER_PORTS = {"postgres": 5432, "redis": 6379, "minio": 9000}  # the images' defaults


# ---- Compose interpolation (the subset Compose documents) -------------------------------

_VAR = re.compile(
    r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(Exception):
    pass


def interpolate(value: str, env: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        current = env.get(name)
        if op is None:
            return current or ""
        unset = current is None or (op.startswith(":") and current == "")
        if op.endswith("-"):
            return arg if unset else current  # type: ignore[return-value]
        if op.endswith("?"):
            if unset:
                raise MissingVariable(f"{name}: {arg}")
            return current  # type: ignore[return-value]
        return "" if unset else arg

    return _VAR.sub(sub, value)


def interpolate_all(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_all(n, env) for n in node]
    if isinstance(node, dict):
        return {k: interpolate_all(v, env) for k, v in node.items()}
    return node


def variable_references(node: Any) -> list[tuple[str, str | None]]:
    """(name, operator) for every ${...} a Compose file interpolates."""
    if isinstance(node, str):
        return [(m.group("name") or m.group("bare"), m.group("op"))
                for m in _VAR.finditer(node) if m.group(0) != "$$"]
    if isinstance(node, list):
        return [r for n in node for r in variable_references(n)]
    if isinstance(node, dict):
        return [r for v in node.values() for r in variable_references(v)]
    return []


def shell_expand(text: str, env: dict[str, str]) -> str:
    """What `sh` makes of ${NAME}/$NAME inside a container whose environment is ``env``."""
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), ""), text)


# ---- loading ------------------------------------------------------------------------------


def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    return interpolate_all(raw_compose(), COMPOSE_ENV if env is None else env)


def service_env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def argv(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def image_name(svc: dict[str, Any]) -> str:
    """`quay.io/minio/minio:TAG` -> `minio/minio`; `postgres:15` -> `postgres`."""
    ref = svc["image"].split("@")[0]
    path = ref.rsplit(":", 1)[0] if ":" in ref.split("/")[-1] else ref
    parts = path.split("/")
    if "." in parts[0] or ":" in parts[0]:
        parts = parts[1:]
    if parts[0] == "library":
        parts = parts[1:]
    return "/".join(parts)


def app_image(doc: dict[str, Any]) -> str:
    built = {svc["image"] for svc in doc["services"].values() if "build" in svc}
    assert len(built) == 1, f"expected one image built from deploy/Dockerfile, got {built}"
    return built.pop()


def app_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    image = app_image(doc)
    return {name: svc for name, svc in doc["services"].items() if svc.get("image") == image}


def third_party_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    apps = app_services(doc)
    return {name: svc for name, svc in doc["services"].items() if name not in apps}


@dataclass
class Instruction:
    stage: int
    keyword: str
    args: str


def dockerfile() -> list[Instruction]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out: list[Instruction] = []
    stage = -1
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(stage, keyword, args.strip()))
    return out


def stage_of(instructions: list[Instruction], index: int) -> list[Instruction]:
    return [i for i in instructions if i.stage == index]


def runtime_stage() -> list[Instruction]:
    instructions = dockerfile()
    return stage_of(instructions, instructions[-1].stage)


def image_env() -> dict[str, str]:
    """ENV of the runtime stage (``ENV A=1 B=2`` form)."""
    env: dict[str, str] = {}
    for ins in runtime_stage():
        if ins.keyword == "ENV":
            for token in shlex.split(ins.args):
                key, sep, value = token.partition("=")
                assert sep, f"use the ENV KEY=value form: {ins.args}"
                env[key] = value
    return env


def exec_form(ins: Instruction) -> list[str]:
    args = ins.args
    assert args.startswith("["), f"{ins.keyword} must use the exec (JSON) form: {args}"
    return json.loads(args)


def container_env(svc: dict[str, Any]) -> dict[str, str]:
    """What a process in an app container sees: image ENV, then the service's environment."""
    env = {k: v for k, v in image_env().items() if k != "PATH"}
    env.update(service_env(svc))
    return env


def port_of(address: str) -> int:
    host, _, port = address.rpartition(":")
    assert port.isdigit(), f"expected host:port, got {address!r}"
    return int(port)


def host_of(address: str) -> str:
    return address.rpartition(":")[0]


def published(svc: dict[str, Any]) -> dict[int, int]:
    """container port -> host port, from the short `ports:` syntax."""
    out = {}
    for entry in svc.get("ports", []):
        parts = str(entry).split(":")
        out[int(parts[-1].split("/")[0])] = int(parts[-2])
    return out


def healthcheck_argv(svc: dict[str, Any]) -> list[str]:
    test = svc["healthcheck"]["test"]
    if isinstance(test, str):
        return shlex.split(test)
    kind, *rest = test
    assert kind in {"CMD", "CMD-SHELL"}, f"healthcheck test must start with CMD or CMD-SHELL: {test}"
    return shlex.split(rest[0]) if kind == "CMD-SHELL" else rest


def has_healthcheck(svc: dict[str, Any]) -> bool:
    check = svc.get("healthcheck")
    return bool(check) and not check.get("disable") and check.get("test") not in (None, ["NONE"], "NONE")


def seconds(value: str | int | float) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value):
        total += float(amount) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[unit]
    return total


# ---- what a command names must exist --------------------------------------------------------


def check_python_module(name: str) -> None:
    spec = importlib.util.find_spec(name)
    assert spec is not None, f"python -m {name}: no such module"
    if spec.submodule_search_locations is not None:
        assert importlib.util.find_spec(f"{name}.__main__") is not None, f"python -m {name}: package has no __main__"
    else:
        assert spec.origin and 'if __name__ == "__main__":' in Path(spec.origin).read_text(), (
            f"python -m {name}: module has no `if __name__ == \"__main__\":` entry point"
        )


_CELERY_PROBE = r"""
import json, sys
import click
from celery.app.utils import find_app
from celery.bin.base import CLIContext
from celery.bin.celery import celery as cli

target, commands = json.loads(sys.argv[1])
app = find_app(target)
app.loader.import_default_modules()
obj = CLIContext(app=app, no_color=True, workdir=None, quiet=True)
parsed = []
for command in commands:
    name, *rest = command
    if name not in cli.commands:
        parsed.append({"error": f"celery has no command {name!r}"})
        continue
    try:
        ctx = cli.commands[name].make_context(name, rest, parent=click.Context(cli, obj=obj))
    except click.UsageError as err:
        parsed.append({"error": str(err)})
        continue
    parsed.append({"name": name, "queues": list(ctx.params.get("queues") or [])})
routes = app.conf.task_routes or {}
assert isinstance(routes, dict), "task_routes is expected to be a dict of glob -> {'queue': name}"
route = lambda task: app.amqp.router.route({}, task)["queue"].name
print(json.dumps({
    "route_queues": sorted({r["queue"] for r in routes.values()} | {app.conf.task_default_queue}),
    "registered": {t: route(t) for t in app.tasks if not t.startswith("celery.")},
    "beat": sorted(entry["task"] for entry in app.conf.beat_schedule.values()),
    "route": {t: route(t) for t in json.loads(sys.argv[2])},
    "parsed": parsed,
}))
"""


def celery_split(command: list[str]) -> tuple[str, list[str]]:
    """`celery -A target sub ...` -> (target, [sub, ...])."""
    assert command[0] == "celery"
    rest = command[1:]
    target = ""
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option in ("-A", "--app"):
            target = rest.pop(0)
        elif option.startswith("--app="):
            target = option.split("=", 1)[1]
    assert target, f"{shlex.join(command)}: give the app with -A"
    return target, rest


def probe_celery(target: str, commands: list[list[str]], env: dict[str, str]) -> dict[str, Any]:
    """Load the Celery app as `celery -A target` would, in a process with the container's environment."""
    clean = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    clean.update(env)
    event_tasks = [task for tasks in TASKS_FOR_TOPIC.values() for task, _queue in tasks]
    result = subprocess.run(
        [sys.executable, "-c", _CELERY_PROBE, json.dumps([target, commands]), json.dumps(event_tasks)],
        capture_output=True, text=True, env=clean, cwd=ROOT, timeout=120,
    )
    assert result.returncode == 0, f"celery -A {target}: app does not load:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout)


def project_scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def check_contentops(command: list[str]) -> None:
    script = command[0]
    assert script in project_scripts(), f"{script}: not a console script in pyproject's [project.scripts]"
    module_name, _, func = project_scripts()[script].partition(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, func, None)), f"{script}: {project_scripts()[script]} is not callable"
    parser = module.build_parser()
    try:
        parser.parse_args(command[1:])
    except SystemExit:
        pytest.fail(f"{shlex.join(command)}: the console script does not accept these arguments")


def check_command(command: list[str], env: dict[str, str], where: str) -> dict[str, Any] | None:
    """Fail unless every name in ``command`` exists; for celery, return what the app reports."""
    assert command, f"{where}: no command"
    if command[0] in ("python", "python3"):
        if command[1] == "-c":  # an inline probe: it must compile; test_python_c_probes_* run each kind for real
            compile(command[2], where, "exec")
            assert python_c_kind(command) in ("http", "beat-schedule"), f"{where}: an untested `python -c` probe"
            return None
        assert command[1] == "-m", f"{where}: run modules with `python -m`, got {command}"
        check_python_module(command[2])
        return None
    if command[0] == "celery":
        target, rest = celery_split(command)
        report = probe_celery(target, [rest], env)
        assert "error" not in report["parsed"][0], f"{where}: {shlex.join(command)}: {report['parsed'][0]['error']}"
        return report
    if command[0] in project_scripts():
        check_contentops(command)
        return None
    pytest.fail(f"{where}: unknown program {command[0]!r} in {command}")


# ---- what the code says about its processes -------------------------------------------------------


def settings_fields() -> dict[str, str]:
    """Settings field -> its environment variable, read from load_settings()'s source."""
    return dict(re.findall(r'(\w+)=env\["([A-Z0-9_]+)"\]', inspect.getsource(load_settings)))


def entry_source(module: str) -> Path:
    """The file `python -m module` runs."""
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"python -m {module}: no such module"
    if spec.submodule_search_locations is not None:
        spec = importlib.util.find_spec(f"{module}.__main__")
    assert spec is not None and spec.origin
    return Path(spec.origin)


def _address_settings(text: str) -> set[str]:
    fields = settings_fields()
    return {fields[attr] for attr in re.findall(r"\b(?:s|settings)\.(\w+_addr)\b", text)}


def listen_settings(module: str) -> set[str]:
    """The address settings `python -m module` listens on: the ones its entry point reads, METRICS_ADDR aside."""
    return _address_settings(entry_source(module).read_text()) - {"METRICS_ADDR"}


def dialed_settings(module: str) -> set[str]:
    """The address settings the rest of the module's package reads: the servers it calls."""
    entry = entry_source(module)
    text = "\n".join(f.read_text() for f in entry.parent.glob("*.py") if f.name != "__main__.py" and f != entry)
    return _address_settings(text) - {"METRICS_ADDR"} - listen_settings(module)


def is_grpc_server(module: str) -> bool:
    return "GrpcServer(" in entry_source(module).read_text()


def serves_metrics_on_metrics_addr(command: list[str]) -> bool:
    """Does this process serve /metrics on METRICS_ADDR? (The web edge serves it on WEB_ADDR instead.)"""
    if command[:2] == ["python", "-m"]:
        source = entry_source(command[2]).read_text()
        return "serve_metrics(" in source and "metrics_addr" in source
    if command[0] == "celery":
        _target, rest = celery_split(command)
        celery_app = (ROOT / "services" / "shared" / "celery_app.py").read_text()
        return rest[0] == "worker" and "worker_init.connect" in celery_app and "serve_worker_metrics" in celery_app
    return False


HTTP_PROBE = "urllib.request.urlopen(sys.argv[1]"
BEAT_PROBE = "os.path.getmtime"


def python_c_kind(command: list[str]) -> str:
    """Which of the known inline probes a `python -c` command is."""
    assert command[:2] == ["python", "-c"], command
    if HTTP_PROBE in command[2] and len(command) == 4:
        return "http"
    if BEAT_PROBE in command[2] and len(command) == 5:
        return "beat-schedule"
    return "unknown"


def http_probe_url(command: list[str]) -> Any:
    assert python_c_kind(command) == "http", f"not the HTTP probe: {command}"
    url = urlparse(command[3])
    assert url.scheme == "http" and url.hostname in {"127.0.0.1", "localhost"} and url.port, command[3]
    return url


def beat_schedule_arg(command: list[str]) -> str:
    _target, rest = celery_split(command)
    assert rest[0] == "beat"
    for i, option in enumerate(rest):
        if option in ("-s", "--schedule"):
            return rest[i + 1]
        if option.startswith("--schedule="):
            return option.split("=", 1)[1]
    pytest.fail(f"{shlex.join(command)}: give beat its schedule file with --schedule (its probe watches it)")


def check_beat_probe(beat_command: list[str], probe: list[str], env: dict[str, str]) -> None:
    """The probe watches the file this beat writes, and allows more than beat's sync interval between writes."""
    from celery.beat import PersistentScheduler

    assert python_c_kind(probe) == "beat-schedule", probe
    assert probe[3] == beat_schedule_arg(beat_command), "the probe watches another file than beat writes"
    interval = load_settings(env).scheduler_interval_seconds  # beat ticks at least this often (publish-due-posts)
    assert float(probe[4]) > PersistentScheduler.sync_every + interval + 60, "the probe would fail a healthy beat"


_WEB_ROUTES: dict[str, set[str]] = {}


def web_get_routes(tmp_dir: Path) -> set[str]:
    """Paths the web edge answers with GET, from the app build_app() makes."""
    if not _WEB_ROUTES:
        from starlette.routing import Route

        from services.web.app import build_app
        from services.web.backends import Backends

        settings = load_settings({"CONTENTOPS_DATA_DIR": str(tmp_dir), "CONTENTOPS_SECRET_KEY": "routes"})
        app = build_app(settings, Backends(settings, "token"))
        _WEB_ROUTES["get"] = {r.path for r in app.routes if isinstance(r, Route) and "GET" in (r.methods or {"GET"})}
    return _WEB_ROUTES["get"]


# ---- the Compose file ---------------------------------------------------------------------------


def test_compose_has_the_expected_services_and_no_invented_ones() -> None:
    assert set(compose()["services"]) == EXPECTED_SERVICES


def test_every_interpolated_variable_has_a_default_or_is_required_and_documented() -> None:
    example = (DEPLOY / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", example, flags=re.M))
    for name, op in variable_references(raw_compose()):
        assert op in (":-", "-", ":?", "?"), f"${{{name}}} has neither a default nor a :? message"
        assert name in documented, f"{name} is interpolated but not in deploy/.env.example"


def test_the_secret_key_must_be_supplied() -> None:
    with pytest.raises(MissingVariable, match="CONTENTOPS_SECRET_KEY"):
        compose({})


def test_app_services_set_only_real_settings() -> None:
    doc = compose()
    assert set(app_services(doc)) == {"migrate", "content", "distribution", "tracking", "tracking-consumer", "worker", "beat",
                                      "web"}
    for name, svc in app_services(doc).items():
        unknown = set(service_env(svc)) - SETTING_NAMES
        assert not unknown, f"{name}: {sorted(unknown)} are not settings in services/shared/settings.py"


def test_third_party_services_set_only_their_documented_variables() -> None:
    for name, svc in third_party_services(compose()).items():
        image = image_name(svc)
        assert image in THIRD_PARTY_ENV, f"{name}: image {image} has no documented environment here"
        for key in service_env(svc):
            assert key in THIRD_PARTY_ENV[image] or key in SETTING_NAMES, f"{name}: {key} is not a {image} variable"


def test_app_services_run_on_the_production_stores() -> None:
    for name, svc in app_services(compose()).items():
        settings = load_settings(container_env(svc))  # also proves every value parses
        assert settings.database_url.startswith("postgresql+psycopg://"), name
        assert settings.auto_migrate is False, f"{name}: migrations run once, in `migrate`"
        assert not settings.embedded_tasks, f"{name}: needs REDIS_URL"
        assert settings.minio_endpoint and settings.minio_public_endpoint, name
        assert service_env(svc)["CONTENTOPS_SECRET_KEY"], f"{name}: every replica must share the signing key"
        assert settings.secret_key == COMPOSE_ENV["CONTENTOPS_SECRET_KEY"].encode(), name


def test_app_services_share_one_configuration() -> None:
    envs = [service_env(svc) for svc in app_services(compose()).values()]
    shared = set.intersection(*(set(e) for e in envs))
    for key in shared:
        assert len({e[key] for e in envs}) == 1, f"{key} differs between app services"
    assert {"DATABASE_URL", "REDIS_URL", "MINIO_ENDPOINT", "MINIO_BUCKET", "CONTENTOPS_SECRET_KEY"} <= shared


def test_python_modules_run_by_compose_exist() -> None:
    doc = compose()
    seen = 0
    for name, svc in doc["services"].items():
        commands = [argv(svc.get("command"))]
        if has_healthcheck(svc) and name in app_services(doc):
            commands.append(healthcheck_argv(svc))
        for command in commands:
            if command[:2] == ["python", "-m"]:
                check_python_module(command[2])
                seen += 1
    assert seen >= 2  # the content server and its health check


def test_python_module_check_fails_on_a_renamed_module() -> None:
    with pytest.raises(AssertionError, match="no such module"):
        check_python_module("services.contents")
    with pytest.raises(AssertionError, match="no __main__"):
        check_python_module("services.shared")


def test_console_scripts_run_by_compose_exist_and_accept_their_arguments() -> None:
    doc = compose()
    migrate = argv(doc["services"]["migrate"]["command"])
    assert migrate == ["contentops", "migrate"]
    check_contentops(migrate)
    with pytest.raises(pytest.fail.Exception):
        check_contentops(["contentops", "migrat"])


def test_every_app_command_and_health_check_names_things_that_exist() -> None:
    doc = compose()
    for name, svc in app_services(doc).items():
        check_command(argv(svc["command"]), container_env(svc), f"{name}.command")
        if has_healthcheck(svc):
            check_command(healthcheck_argv(svc), container_env(svc), f"{name}.healthcheck")


def _worker_and_beat(doc: dict[str, Any]) -> tuple[dict[str, list[str]], list[str]]:
    workers: dict[str, list[str]] = {}
    beats = []
    for name, svc in app_services(doc).items():
        command = argv(svc["command"])
        if command[0] != "celery":
            continue
        _target, rest = celery_split(command)
        if rest[0] == "worker":
            workers[name] = command
        elif rest[0] == "beat":
            beats.append(name)
    return workers, beats


def test_celery_workers_consume_routed_queues_and_know_every_task_sent_there() -> None:
    doc = compose()
    workers, beats = _worker_and_beat(doc)
    assert workers and len(beats) == 1, "one or more workers and exactly one beat"
    consumed: set[str] = set()
    for name, command in workers.items():
        target, rest = celery_split(command)
        report = probe_celery(target, [rest], container_env(doc["services"][name]))
        queues = report["parsed"][0]["queues"] or [report["route_queues"][0]]
        for queue in queues:
            assert queue in report["route_queues"], f"{name}: queue {queue!r} is not in the Celery routes"
            # Tasks that arrive on this queue: the app's own, and the events the content service emits.
            arriving = {t for t, q in report["registered"].items() if q == queue}
            arriving |= {task for tasks in TASKS_FOR_TOPIC.values() for task, q in tasks if q == queue}
            assert arriving, f"{name}: nothing is ever sent to queue {queue!r}"
            unknown = arriving - set(report["registered"])
            assert not unknown, (
                f"{name}: consumes {queue!r} but has not registered {sorted(unknown)}; "
                "Celery rejects such messages as unregistered tasks, i.e. drops them"
            )
        consumed |= set(queues)
        for task in report["beat"]:
            assert task in report["registered"], f"beat schedules {task}, which no module registers"
            assert report["registered"][task] in consumed, f"beat's {task} goes to a queue no worker consumes"
        for task, queue in (t for tasks in TASKS_FOR_TOPIC.values() for t in tasks):
            assert report["route"][task] == queue, f"{task}: the events module and the Celery routes disagree"


def test_celery_probe_fails_on_a_renamed_app_or_queue_option() -> None:
    env = container_env(compose()["services"]["worker"])
    with pytest.raises(AssertionError, match="does not load"):
        probe_celery("services.workers", [["worker"]], env)
    report = probe_celery("services.worker", [["worker", "--queue-typo", "content"]], env)
    assert "error" in report["parsed"][0]


def test_database_url_points_at_the_postgres_service_with_its_credentials() -> None:
    doc = compose()
    pg = service_env(doc["services"]["postgres"])
    assert image_name(doc["services"]["postgres"]) == "postgres"
    assert doc["services"]["postgres"]["image"].split(":")[1].startswith("15")
    for name, svc in app_services(doc).items():
        url = make_url(service_env(svc)["DATABASE_URL"])
        assert url.drivername == "postgresql+psycopg", name
        assert (url.host, url.port or 5432) == ("postgres", CONTAINER_PORTS["postgres"]), name
        assert (url.username, url.password, url.database) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"],
                                                              pg["POSTGRES_DB"]), name


def test_redis_url_points_at_a_persistent_redis_service() -> None:
    doc = compose()
    redis = doc["services"]["redis"]
    command = argv(redis["command"])
    assert "--appendonly" in command and command[command.index("--appendonly") + 1] == "yes"
    port = int(command[command.index("--port") + 1]) if "--port" in command else CONTAINER_PORTS["redis"]
    for name, svc in app_services(doc).items():
        url = make_url(service_env(svc)["REDIS_URL"])
        assert url.drivername == "redis" and (url.host, url.port or 6379) == ("redis", port), name


def _minio_api_port(minio: dict[str, Any]) -> int:
    command = argv(minio["command"])
    return port_of(command[command.index("--address") + 1]) if "--address" in command else CONTAINER_PORTS["minio"]


def test_minio_settings_match_the_minio_service() -> None:
    doc = compose()
    minio = doc["services"]["minio"]
    root = service_env(minio)
    api = _minio_api_port(minio)
    for name, svc in app_services(doc).items():
        env = service_env(svc)
        assert host_of(env["MINIO_ENDPOINT"]) == "minio" and port_of(env["MINIO_ENDPOINT"]) == api, name
        assert (env["MINIO_ACCESS_KEY"], env["MINIO_SECRET_KEY"]) == (root["MINIO_ROOT_USER"],
                                                                     root["MINIO_ROOT_PASSWORD"]), name
        assert len(env["MINIO_SECRET_KEY"]) >= 8, "MinIO refuses root passwords under 8 characters"
        # Presigned URLs name the public endpoint; on this machine that is minio's published API port.
        public = env["MINIO_PUBLIC_ENDPOINT"]
        if host_of(public) in {"localhost", "127.0.0.1"}:
            assert published(minio).get(api) == port_of(public), f"{name}: {public} is not minio's published port"


def test_bucket_init_creates_the_bucket_the_services_use() -> None:
    doc = compose()
    init = doc["services"]["minio-init"]
    assert image_name(init) == "minio/mc"
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    script = shell_expand(" ".join(argv(init.get("command"))), service_env(init))
    api = _minio_api_port(doc["services"]["minio"])
    alias = re.search(r"mc alias set (\S+) (\S+) (\S+) (\S+)", script)
    assert alias, script
    name, url, user, password = (a.strip('"') for a in alias.groups())
    root = service_env(doc["services"]["minio"])
    assert url == f"http://minio:{api}" and (user, password) == (root["MINIO_ROOT_USER"], root["MINIO_ROOT_PASSWORD"])
    bucket = service_env(doc["services"]["content"])["MINIO_BUCKET"]
    assert re.search(rf'mc mb (--ignore-existing|-p) "?{re.escape(name)}/{re.escape(bucket)}"?(\s|$)', script), script


def test_content_listens_where_it_is_published_exposed_and_probed() -> None:
    doc = compose()
    content = doc["services"]["content"]
    address = container_env(content)["CONTENT_GRPC_ADDR"]
    port = port_of(address)
    assert host_of(address) in WILDCARD_HOSTS, f"{address}: other containers could not reach it"
    assert port in published(content), f"content publishes {published(content)}, listens on {port}"
    assert str(port) in exposed_ports()
    probe = healthcheck_argv(content)
    assert probe[:3] == ["python", "-m", "services.shared.healthcheck"]
    target = probe[3] if len(probe) > 3 and not probe[3].startswith("-") else address
    assert port_of(healthcheck.probe_address(target)) == port


def test_health_checks_exist_and_dependencies_wait_on_them() -> None:
    doc = compose()
    services = doc["services"]
    for name in ("content", "postgres", "redis", "minio"):
        assert has_healthcheck(services[name]), f"{name} needs a health check"
    for name, svc in app_services(doc).items():
        if svc.get("restart", "no") != "no":  # long-running (one-shots like migrate are judged by their exit code)
            assert has_healthcheck(svc), f"{name} runs for good: it needs a health check"
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert has_healthcheck(services[dep]), f"{name} waits for {dep} to be healthy; it has no check"
            elif condition == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"{dep} is a one-shot: restart must be 'no'"
            else:
                pytest.fail(f"{name} -> {dep}: use service_healthy or service_completed_successfully")
    for name in ("content", "worker", "beat"):
        conditions = {d: s["condition"] for d, s in services[name]["depends_on"].items()}
        assert conditions.get("migrate") == "service_completed_successfully", f"{name} must start after migrate"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_app_containers_that_serve_no_grpc_override_the_image_health_check() -> None:
    # The image's HEALTHCHECK probes gRPC; a worker or beat inheriting it would be marked unhealthy.
    for name, svc in app_services(compose()).items():
        if argv(svc["command"])[:3] != ["python", "-m", "services.content"]:
            assert "healthcheck" in svc, f"{name} inherits the image's gRPC health check"


def test_content_gets_longer_to_stop_than_its_drain_grace() -> None:
    content = compose()["services"]["content"]
    grace = float(container_env(content).get("SHUTDOWN_GRACE_SECONDS", SETTING_DEFAULTS["SHUTDOWN_GRACE_SECONDS"]))
    assert seconds(content.get("stop_grace_period", "10s")) > grace


def test_app_image_is_built_from_this_dockerfile() -> None:
    svc = compose()["services"]["migrate"]
    context = (DEPLOY / svc["build"]["context"]).resolve()
    assert context == ROOT
    assert (context / svc["build"]["dockerfile"]).resolve() == DOCKERFILE


def compose_servers(doc: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Listen setting -> (the Compose service whose process listens on it, the address it listens on)."""
    out: dict[str, tuple[str, str]] = {}
    for name, svc in app_services(doc).items():
        command = argv(svc["command"])
        if command[:2] == ["python", "-m"]:
            for setting in listen_settings(command[2]):
                assert setting not in out, f"{setting}: both {out[setting][0]} and {name} listen on it"
                out[setting] = (name, container_env(svc).get(setting, SETTING_DEFAULTS[setting]))
    return out


def test_every_server_listens_where_it_is_published_and_probed(tmp_path: Path) -> None:
    doc = compose()
    servers = compose_servers(doc)
    assert set(servers) == {"CONTENT_GRPC_ADDR", "DISTRIBUTION_GRPC_ADDR", "TRACKING_GRPC_ADDR", "WEB_ADDR"}
    for setting, (name, address) in servers.items():
        svc = doc["services"][name]
        port = port_of(address)
        assert host_of(address) in WILDCARD_HOSTS, f"{name}: {setting}={address}: other containers could not reach it"
        assert port in published(svc), f"{name} publishes {published(svc)}, listens on {port}"
        probe = healthcheck_argv(svc)
        if is_grpc_server(argv(svc["command"])[2]):
            assert probe[:3] == ["python", "-m", "services.shared.healthcheck"], f"{name}: probe with gRPC health"
            target = probe[3] if len(probe) > 3 and not probe[3].startswith("-") else healthcheck.default_address()
            assert port_of(healthcheck.probe_address(target)) == port, f"{name}: the health check asks another port"
        else:
            url = http_probe_url(probe)
            assert url.port == port, f"{name}: the health check asks port {url.port}, the edge listens on {port}"
            assert url.path == "/healthz" and url.path in web_get_routes(tmp_path), f"{name}: no route {url.path}"


def test_clients_dial_the_services_where_they_listen() -> None:
    doc = compose()
    servers = compose_servers(doc)
    dialed = 0
    for name, svc in app_services(doc).items():
        command = argv(svc["command"])
        if command[:2] != ["python", "-m"]:
            continue
        for setting in dialed_settings(command[2]):
            server, address = servers[setting]
            value = container_env(svc).get(setting, SETTING_DEFAULTS[setting])
            assert value == f"{server}:{port_of(address)}", f"{name}: {setting}={value}, but {server} listens on {address}"
            assert svc["depends_on"][server]["condition"] == "service_healthy", f"{name} must wait for {server}"
            dialed += 1
    assert dialed >= 3  # the web edge calls content, distribution and tracking


def test_the_web_edge_gets_its_service_token_and_the_docs_say_how_to_make_one() -> None:
    web = raw_compose()["services"]["web"]
    assert argv(web["command"]) == ["python", "-m", "services.web"]
    assert re.fullmatch(r"\$\{WEB_SERVICE_TOKEN(:?[-?][^}]*)?\}", web["environment"]["WEB_SERVICE_TOKEN"])
    with_token = compose({**COMPOSE_ENV, "WEB_SERVICE_TOKEN": "co_token"})["services"]["web"]
    assert service_env(with_token)["WEB_SERVICE_TOKEN"] == "co_token"
    edge = entry_source("services.web").read_text()
    assert "web_service_token" in edge and "SystemExit" in edge, ".env.example says the edge exits without its token"
    # deploy/.env.example: the command that makes the token runs the real CLI in an app container.
    example = (DEPLOY / ".env.example").read_text()
    lines = re.findall(r"^#\s*(docker compose .*)$", example, flags=re.M)
    assert lines, "deploy/.env.example must say how to create the web edge's service user"
    for line in lines:
        words = shlex.split(line)
        assert (ROOT / words[words.index("-f") + 1]).resolve() == COMPOSE_FILE
        rest = words[words.index("run") + 1:]
        while rest[0].startswith("-"):
            rest.pop(0)
        service, command = rest[0], rest[1:]
        assert service in app_services(compose()), f"{line}: {service} is not an app service"
        check_contentops(command)
        from services.shared.cli import build_parser, cmd_create_user
        from services.shared.identity.domain import Role

        args = build_parser().parse_args(command[1:])
        assert args.func is cmd_create_user and Role(args.role) is Role.SERVICE, f"{line}: not a ROLE_SERVICE user"


def test_the_consumer_and_beat_health_checks_probe_what_they_run() -> None:
    doc = compose()
    consumer = doc["services"]["tracking-consumer"]
    assert serves_metrics_on_metrics_addr(argv(consumer["command"]))
    metrics_addr = service_env(consumer)["METRICS_ADDR"]
    assert host_of(metrics_addr) in WILDCARD_HOSTS
    url = http_probe_url(healthcheck_argv(consumer))
    assert (url.port, url.path) == (port_of(metrics_addr), "/metrics")
    beat = doc["services"]["beat"]
    command = argv(beat["command"])
    check_beat_probe(command, healthcheck_argv(beat), container_env(beat))
    # The schedule file lives in the image's data folder, which the Dockerfile gives to the non-root user.
    assert Path(beat_schedule_arg(command)).parent == Path(image_env()["CONTENTOPS_DATA_DIR"])
    worker = doc["services"]["worker"]
    probe = shlex.split(shell_expand(" ".join(healthcheck_argv(worker)), {"HOSTNAME": "worker-host"}))
    check_worker_probe(argv(worker["command"]), probe, "worker-host")


def check_worker_probe(worker_command: list[str], probe: list[str], hostname: str) -> None:
    """`celery inspect ping` addressed to this worker: celery@<host name> unless the worker names itself."""
    assert probe[:3] == worker_command[:3], "the probe must load the worker's own Celery app"
    _target, rest = celery_split(probe)
    assert rest[:2] == ["inspect", "ping"], probe
    assert not {"-n", "--hostname"} & set(worker_command), "the worker renamed its node: update the probe"
    destination = rest[rest.index("--destination") + 1] if "--destination" in rest else rest[rest.index("-d") + 1]
    assert destination == f"celery@{hostname}", f"the probe pings {destination}, the worker is celery@{hostname}"


# ---- the Dockerfile -----------------------------------------------------------------------------


def exposed_ports() -> set[str]:
    return {p.split("/")[0] for i in runtime_stage() if i.keyword == "EXPOSE" for p in i.args.split()}


def test_dockerfile_is_multi_stage_on_python_3_11_slim() -> None:
    instructions = dockerfile()
    froms = [i.args.split() for i in instructions if i.keyword == "FROM"]
    assert len(froms) >= 2
    assert froms[-1][0] == "python:3.11-slim"
    builder = froms[0]
    assert builder[0] == froms[-1][0], "the venv is copied between stages: same Python in both"
    assert [w.lower() for w in builder[1:]] == ["as", "builder"]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"


def test_builder_installs_the_package_into_a_venv_from_pyproject() -> None:
    builder = stage_of(dockerfile(), 0)
    copies = " ".join(i.args for i in builder if i.keyword == "COPY")
    runs = " ".join(i.args for i in builder if i.keyword == "RUN")
    assert "pyproject.toml" in copies and "services" in copies
    assert "python -m venv /opt/venv" in runs and "pip install" in runs


def test_runtime_copies_the_venv_and_runs_as_a_non_root_user() -> None:
    runtime = runtime_stage()
    assert any(i.keyword == "COPY" and "--from=builder" in i.args and "/opt/venv" in i.args for i in runtime)
    assert "/opt/venv/bin" in image_env()["PATH"]
    users = [i.args for i in runtime if i.keyword == "USER"]
    assert users, "the runtime stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    created = " ".join(i.args for i in runtime if i.keyword == "RUN")
    assert re.search(rf"useradd\b[^&;]*\b{re.escape(user)}\b", created), f"user {user} is never created"
    last_user = max(n for n, i in enumerate(runtime) if i.keyword == "USER")
    assert not any(i.keyword == "RUN" for i in runtime[last_user:]), "RUN after USER would need root"


def test_dockerfile_copies_only_files_that_exist_and_are_not_ignored() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    included = {line[1:].strip().rstrip("/") for line in ignore if line.startswith("!")}
    for ins in dockerfile():
        if ins.keyword != "COPY" or "--from=" in ins.args:
            continue
        *sources, _dest = [a for a in shlex.split(ins.args) if not a.startswith("--")]
        for source in sources:
            if "*" in source:
                continue  # optional (e.g. README.md*)
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert source.rstrip("/") in included, f"COPY {source}: excluded by Dockerfile.dockerignore"


def test_image_env_names_only_real_settings() -> None:
    env = image_env()
    unknown = set(env) - SETTING_NAMES - IMAGE_ENV
    assert not unknown, f"{sorted(unknown)} are not settings"
    assert host_of(env["CONTENT_GRPC_ADDR"]) in WILDCARD_HOSTS
    assert {str(port_of(env["CONTENT_GRPC_ADDR"]))} == exposed_ports() == {"50051"}


def test_dockerfile_cmd_and_healthcheck_run_real_modules() -> None:
    runtime = runtime_stage()
    cmd = exec_form(next(i for i in runtime if i.keyword == "CMD"))
    assert cmd == ["python", "-m", "services.content"]
    check_python_module(cmd[2])
    health = next(i for i in runtime if i.keyword == "HEALTHCHECK")
    options, _, command = health.args.partition("CMD ")
    probe = json.loads(command)
    assert probe[:3] == ["python", "-m", "services.shared.healthcheck"]
    check_python_module(probe[2])
    assert "--timeout=" in options and "--interval=" in options


def test_installed_package_contains_all_the_code(tmp_path: Path) -> None:
    """The runtime image runs the installed wheel, not the source tree: nothing may be left out."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copytree(ROOT / "services", src / "services", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "w"),
         str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = (tmp_path / "w").glob("contentops-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {str(p.relative_to(src)) for p in (src / "services").rglob("*")
              if p.is_file() and p.suffix != ".md"}
    assert wanted - names == set()
    assert "services/content/migrations/versions/0001_topics_assets_posts_revisions_outbox.py" in names


# ---- services/shared/healthcheck.py ---------------------------------------------------------------


@pytest.fixture
def health_server() -> Any:
    def refuse(_token_id: str, _secret: str) -> Any:
        raise AssertionError("health checks need no authentication")

    server = GrpcServer([], refuse, f"127.0.0.1:{infra.free_port()}", max_workers=2, grace_seconds=0)
    server.start()
    yield server
    server.stop(grace=0)


def test_probe_address_maps_wildcards_to_loopback() -> None:
    assert healthcheck.probe_address("0.0.0.0:50051") == "127.0.0.1:50051"
    assert healthcheck.probe_address("[::]:7") == "[::1]:7"
    assert healthcheck.probe_address("content:50051") == "content:50051"
    with pytest.raises(ValueError):
        healthcheck.probe_address("50051")


def test_default_address_is_the_content_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONTENT_GRPC_ADDR", raising=False)
    assert healthcheck.default_address() == SETTING_DEFAULTS["CONTENT_GRPC_ADDR"]
    monkeypatch.setenv("CONTENT_GRPC_ADDR", "0.0.0.0:6001")
    assert healthcheck.default_address() == "0.0.0.0:6001"


def test_healthcheck_passes_while_serving_and_fails_while_draining(health_server: GrpcServer) -> None:
    address = f"127.0.0.1:{health_server.port}"
    assert healthcheck.main([address]) == 0
    assert healthcheck.main([address, "--service", "no.such.Service"]) == 1  # NOT_FOUND
    health_server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert healthcheck.main([address]) == 1


def test_healthcheck_fails_when_nothing_listens() -> None:
    assert healthcheck.main([f"127.0.0.1:{infra.free_port()}", "--timeout", "1"]) == 1
    assert healthcheck.main(["no-port"]) == 1


def test_healthcheck_runs_as_a_module_with_the_address_from_the_environment(health_server: GrpcServer) -> None:
    env = {**os.environ, "CONTENT_GRPC_ADDR": f"0.0.0.0:{health_server.port}"}
    ok = subprocess.run([sys.executable, "-m", "services.shared.healthcheck"], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "SERVING" in ok.stdout
    health_server.health.enter_graceful_shutdown()
    draining = subprocess.run([sys.executable, "-m", "services.shared.healthcheck"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    assert draining.returncode == 1
    assert "NOT_SERVING" in draining.stderr


def test_a_grpc_health_reply_means_what_the_exit_code_says(health_server: GrpcServer) -> None:
    # Cross-check against a plain client: the module's verdict is the Check RPC's status.
    with grpc.insecure_channel(f"127.0.0.1:{health_server.port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert healthcheck.check(f"127.0.0.1:{health_server.port}") == (True, f"127.0.0.1:{health_server.port}: SERVING")


# ---- Kubernetes: deploy/k8s/ ----------------------------------------------------------------------

K8S = DEPLOY / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
SECRET_TEMPLATE = "secret.example.yaml"  # not in the kustomization: `apply -k` must not overwrite the real Secret
# Environment a container may get that is not a setting, and the code that reads it.
K8S_NON_SETTINGS = {"PROMETHEUS_MULTIPROC_DIR": ROOT / "services" / "shared" / "celery_app.py"}
EXPECTED_DEPLOYMENTS = {"content", "distribution", "tracking", "tracking-consumer", "web", "worker", "beat"}
SECRET_SETTINGS = {"CONTENTOPS_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY",
                   "WEB_SERVICE_TOKEN", "SHARE_TOKEN_KEYS", "TRACKING_IP_SALT"}


def _f(*leaves: str, **nested: Any) -> dict[str, Any]:
    """A schema node: leaf fields (any value) and nested ones; a one-item list means a list of that."""
    return {**dict.fromkeys(leaves), **nested}


# The fields of the Kubernetes API (v1.27+) these manifests may use: a misspelt field fails here, not on a cluster.
_META = _f("name", "namespace", "labels", "annotations")
_SELECTOR = _f("matchLabels", "matchExpressions")
_SECCOMP = _f("type", "localhostProfile")
_HANDLER = _f(exec=_f("command"), httpGet=_f("path", "port", "host", "scheme", "httpHeaders"), tcpSocket=_f("port", "host"),
              sleep=_f("seconds"))
_PROBE = _f("initialDelaySeconds", "periodSeconds", "timeoutSeconds", "failureThreshold", "successThreshold",
            "terminationGracePeriodSeconds", grpc=_f("port", "service"), **_HANDLER)
_KEY_REF = _f("name", "key", "optional")
_CONTAINER = _f(
    "name", "image", "imagePullPolicy", "command", "args", "workingDir",
    env=[_f("name", "value", valueFrom=_f(configMapKeyRef=_KEY_REF, secretKeyRef=_KEY_REF, fieldRef=_f("fieldPath", "apiVersion"),
                                          resourceFieldRef=_f("resource", "containerName", "divisor")))],
    envFrom=[_f("prefix", configMapRef=_f("name", "optional"), secretRef=_f("name", "optional"))],
    ports=[_f("name", "containerPort", "protocol")],
    readinessProbe=_PROBE, livenessProbe=_PROBE, startupProbe=_PROBE,
    lifecycle=_f(preStop=_HANDLER, postStart=_HANDLER),
    resources=_f("requests", "limits"),
    securityContext=_f("allowPrivilegeEscalation", "readOnlyRootFilesystem", "runAsNonRoot", "runAsUser", "runAsGroup",
                       "privileged", capabilities=_f("add", "drop"), seccompProfile=_SECCOMP),
    volumeMounts=[_f("name", "mountPath", "readOnly", "subPath")],
)
_POD_TEMPLATE = _f(metadata=_META, spec=_f(
    "restartPolicy", "automountServiceAccountToken", "enableServiceLinks", "terminationGracePeriodSeconds", "serviceAccountName",
    "nodeSelector", "affinity", "tolerations", "topologySpreadConstraints", "priorityClassName",
    containers=[_CONTAINER], initContainers=[_CONTAINER],
    securityContext=_f("runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "supplementalGroups", "fsGroupChangePolicy",
                       seccompProfile=_SECCOMP),
    volumes=[_f("name", "configMap", "secret", emptyDir=_f("medium", "sizeLimit"))],
))
K8S_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("v1", "Namespace"): _f(metadata=_META),
    ("v1", "ConfigMap"): _f("data", metadata=_META),
    ("v1", "Secret"): _f("type", "data", "stringData", metadata=_META),
    ("v1", "Service"): _f(metadata=_META, spec=_f("selector", "type", "clusterIP", "sessionAffinity",
                                                  ports=[_f("name", "port", "targetPort", "protocol", "appProtocol")])),
    ("apps/v1", "Deployment"): _f(metadata=_META, spec=_f(
        "replicas", "revisionHistoryLimit", "minReadySeconds", "progressDeadlineSeconds", selector=_SELECTOR,
        strategy=_f("type", rollingUpdate=_f("maxSurge", "maxUnavailable")), template=_POD_TEMPLATE)),
    ("batch/v1", "Job"): _f(metadata=_META, spec=_f("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished",
                                                    "completions", "parallelism", template=_POD_TEMPLATE)),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): _f(metadata=_META, spec=_f(
        "minReplicas", "maxReplicas", scaleTargetRef=_f("apiVersion", "kind", "name"),
        metrics=[_f("type", resource=_f("name", target=_f("type", "averageUtilization", "averageValue", "value")))],
        behavior=_f("scaleUp", "scaleDown"))),
    ("policy/v1", "PodDisruptionBudget"): _f(metadata=_META, spec=_f("minAvailable", "maxUnavailable",
                                                                     "unhealthyPodEvictionPolicy", selector=_SELECTOR)),
}


def unknown_fields(node: Any, schema: Any, path: str) -> list[str]:
    if schema is None:
        return []
    if isinstance(schema, list):
        if not isinstance(node, list):
            return [f"{path}: expected a list"]
        return [u for i, item in enumerate(node) for u in unknown_fields(item, schema[0], f"{path}[{i}]")]
    if not isinstance(node, dict):
        return [f"{path}: expected a mapping"]
    out = []
    for key, value in node.items():
        if key in ("apiVersion", "kind") and path == "":
            continue
        if key not in schema:
            out.append(f"{path}.{key}")
        else:
            out.extend(unknown_fields(value, schema[key], f"{path}.{key}"))
    return out


@functools.cache
def _parsed_manifests(snapshot: tuple[tuple[str, str], ...]) -> tuple[tuple[str, dict[str, Any]], ...]:
    return tuple((name, doc) for name, text in snapshot for doc in yaml.safe_load_all(text) if doc is not None)


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    """(file name, object) for every manifest in deploy/k8s/ (the kustomization aside). Callers must not mutate them."""
    paths = sorted(p for p in K8S.glob("*.yaml") if p != KUSTOMIZATION)
    return list(_parsed_manifests(tuple((p.name, p.read_text()) for p in paths)))


def k8s(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _file, doc in k8s_documents() if doc["kind"] == kind}


def kustomization() -> dict[str, Any]:
    return yaml.safe_load(KUSTOMIZATION.read_text())


def workloads() -> dict[str, dict[str, Any]]:
    """Deployments and Jobs by name: everything that makes pods."""
    deployments, jobs = k8s("Deployment"), k8s("Job")
    assert not set(deployments) & set(jobs), "a Deployment and a Job share a name"
    return {**deployments, **jobs}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return spec.get("initContainers", []) + spec["containers"]


def the_container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec(workload)["containers"]
    return container


def k8s_command(container: dict[str, Any]) -> list[str]:
    return [str(a) for a in container.get("command", []) + container.get("args", [])]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def match_labels(selector: dict[str, Any]) -> dict[str, str]:
    assert set(selector) == {"matchLabels"}, "use matchLabels (this test does not evaluate matchExpressions)"
    return selector["matchLabels"]


def selected_workloads(selector: dict[str, str]) -> list[str]:
    return [name for name, w in workloads().items() if selects(selector, pod_labels(w))]


def config_data(kind: str, name: str) -> dict[str, str]:
    objects = k8s(kind)
    assert name in objects, f"no {kind} {name} in deploy/k8s"
    obj = objects[name]
    if kind == "ConfigMap":
        return {k: str(v) for k, v in (obj.get("data") or {}).items()}
    data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
    data.update({k: str(v) for k, v in (obj.get("stringData") or {}).items()})
    return data


def k8s_env(container: dict[str, Any]) -> dict[str, str]:
    """What the container's process sees: image ENV, then envFrom in order, then env (which wins)."""
    env = {k: v for k, v in image_env().items() if k != "PATH"}
    for source in container.get("envFrom", []):
        kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else ("Secret", source["secretRef"])
        env.update({source.get("prefix", "") + k: v for k, v in config_data(kind, ref["name"]).items()})
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        source = item["valueFrom"]
        for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            if key in source:
                data = config_data(kind, source[key]["name"])
                assert source[key]["key"] in data, f"{item['name']}: {kind} {source[key]['name']} has no {source[key]['key']}"
                env[item["name"]] = data[source[key]["key"]]
        if "fieldRef" in source:
            env[item["name"]] = f"<{source['fieldRef']['fieldPath']}>"
    return env


def container_ports(container: dict[str, Any]) -> dict[str, int]:
    return {p.get("name", str(p["containerPort"])): int(p["containerPort"]) for p in container.get("ports", [])}


def resolve_port(workload: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port (a number or a container port's name) -> the container port, which must exist."""
    ports = {n: p for c in pod_spec(workload)["containers"] for n, p in container_ports(c).items()}
    if isinstance(port, int):
        assert port in ports.values(), f"port {port} is not among the container ports {ports}"
        return port
    assert port in ports, f"no container port named {port!r} (have {sorted(ports)})"
    return ports[port]


def writable(container: dict[str, Any], path: str) -> bool:
    if not (container.get("securityContext") or {}).get("readOnlyRootFilesystem"):
        return True
    return any(path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
               for m in container.get("volumeMounts", []) if not m.get("readOnly"))


def quantity(value: str | int | float) -> float:
    text = str(value)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


def k8s_servers() -> dict[str, tuple[str, int]]:
    """Listen setting -> (the Deployment whose process listens on it, the port)."""
    out: dict[str, tuple[str, int]] = {}
    for name, deployment in k8s("Deployment").items():
        container = the_container(deployment)
        command = k8s_command(container)
        if command[:2] == ["python", "-m"]:
            for setting in listen_settings(command[2]):
                assert setting not in out, f"{setting}: both {out[setting][0]} and {name} listen on it"
                address = k8s_env(container).get(setting, SETTING_DEFAULTS[setting])
                assert host_of(address) in WILDCARD_HOSTS, f"{name}: {setting}={address}: only its own pod could reach it"
                out[setting] = (name, port_of(address))
    return out


def service_address(deployment: str, port: int) -> str:
    """`service:port` of the one Service that routes to this Deployment's container port."""
    found = []
    for name, service in k8s("Service").items():
        if selected_workloads(service["spec"]["selector"]) == [deployment]:
            for entry in service["spec"]["ports"]:
                if resolve_port(workloads()[deployment], entry.get("targetPort", entry["port"])) == port:
                    found.append(f"{name}:{entry['port']}")
    assert len(found) == 1, f"{deployment}:{port}: expected one Service port routing to it, found {found}"
    return found[0]


def exec_probe_argv(probe: dict[str, Any], hostname: str) -> list[str]:
    """An exec probe's command; `sh -c "..."` is expanded the way sh would, with HOSTNAME = the pod name."""
    command = [str(a) for a in probe["exec"]["command"]]
    if command[:2] in (["sh", "-c"], ["/bin/sh", "-c"]):
        return shlex.split(shell_expand(command[2], {"HOSTNAME": hostname}))
    return command


def test_k8s_manifests_parse_and_use_only_real_api_fields() -> None:
    seen: set[tuple[str, str]] = set()
    for file, doc in k8s_documents():
        key = (doc.get("apiVersion"), doc.get("kind"))
        assert key in K8S_SCHEMAS, f"{file}: {key} is not a kind these manifests use"
        name = doc["metadata"]["name"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63, f"{file}: bad name {name!r}"
        assert (doc["kind"], name) not in seen, f"{file}: a second {doc['kind']} {name}"
        seen.add((doc["kind"], name))
        unknown = unknown_fields(doc, K8S_SCHEMAS[key], "")
        assert not unknown, f"{file}: {doc['kind']} {name}: unknown fields {unknown}"


def test_k8s_field_check_catches_a_misspelt_field() -> None:
    deployment = copy.deepcopy(k8s("Deployment")["web"])
    container = the_container(deployment)
    container["readinesProbe"] = container.pop("readinessProbe")
    assert unknown_fields(deployment, K8S_SCHEMAS[("apps/v1", "Deployment")], "") == [
        ".spec.template.spec.containers[0].readinesProbe"]


def test_kustomization_applies_every_manifest_but_the_secret_template_into_one_namespace() -> None:
    kust = kustomization()
    files = {p.name for p in K8S.glob("*.yaml")} - {KUSTOMIZATION.name}
    assert SECRET_TEMPLATE in files
    assert set(kust["resources"]) == files - {SECRET_TEMPLATE}, "list every manifest (but the Secret template)"
    assert len(kust["resources"]) == len(set(kust["resources"]))
    (namespace,) = k8s("Namespace")
    assert kust["namespace"] == namespace
    for file, doc in k8s_documents():
        if doc["kind"] != "Namespace":  # set in each file too, so `kubectl apply -f` lands in the same place
            assert doc["metadata"].get("namespace") == namespace, f"{file}: {doc['kind']} {doc['metadata']['name']}"
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "contentops", f"{file}: {doc['metadata']['name']}"


def kustomize_build() -> list[dict[str, Any]]:
    """What `kubectl kustomize deploy/k8s` makes of the transformers this kustomization uses (namespace, images)."""
    kust = kustomization()
    assert set(kust) <= {"apiVersion", "kind", "namespace", "resources", "images"}, "a transformer this test does not model"
    images = {i["name"]: f"{i.get('newName', i['name'])}:{i['newTag']}" for i in kust.get("images", [])}
    out = []
    for file in kust["resources"]:
        for doc in yaml.safe_load_all((K8S / file).read_text()):
            if doc is None:
                continue
            if doc["kind"] != "Namespace":
                doc["metadata"]["namespace"] = kust["namespace"]
            if doc["kind"] in ("Deployment", "Job"):
                for container in containers(doc):
                    container["image"] = images.get(container["image"].split(":")[0], container["image"])
            out.append(doc)
    return out


def _rendered_summary(docs: list[dict[str, Any]]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    return {(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace", ""),
             tuple(c["image"] for c in containers(d)) if d["kind"] in ("Deployment", "Job") else ()) for d in docs}


def test_kustomize_build_renders_every_listed_object_with_the_pushed_image() -> None:
    rendered = kustomize_build()
    listed = {(doc["kind"], doc["metadata"]["name"]) for file, doc in k8s_documents() if file != SECRET_TEMPLATE}
    assert {(doc["kind"], doc["metadata"]["name"]) for doc in rendered} == listed
    (image,) = kustomization()["images"]
    for doc in rendered:
        if doc["kind"] in ("Deployment", "Job"):
            assert {c["image"] for c in containers(doc)} == {f"{image['newName']}:{image['newTag']}"}, doc["metadata"]["name"]
    # Where kubectl is installed (it is not required: CI fails on skips), its own kustomize must agree.
    if shutil.which("kubectl"):
        result = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert _rendered_summary([d for d in yaml.safe_load_all(result.stdout) if d]) == _rendered_summary(rendered)


def test_k8s_has_every_process_and_the_objects_around_them() -> None:
    assert set(k8s("Deployment")) == EXPECTED_DEPLOYMENTS
    assert set(k8s("Job")) == {"migrate"}
    assert set(k8s("Service")) == {"content", "distribution", "tracking", "web"}
    assert {h["spec"]["scaleTargetRef"]["name"] for h in k8s("HorizontalPodAutoscaler").values()} == {"web", "worker"}
    assert {"web", "content", "distribution", "tracking"} <= {selected_workloads(match_labels(p["spec"]["selector"]))[0]
                                                                for p in k8s("PodDisruptionBudget").values()}
    assert set(k8s("ConfigMap")) == {"contentops-config"} and set(k8s("Secret")) == {"contentops-secrets"}


def test_k8s_runs_what_compose_runs() -> None:
    """Same components, same programs: the two deployments of this code may not drift apart."""
    services = compose()["services"]
    assert set(workloads()) == set(app_services(compose()))
    for name, workload in workloads().items():
        command = k8s_command(the_container(workload))
        composed = argv(services[name]["command"])
        assert command[:4] == composed[:4], f"{name}: k8s runs {command}, compose {composed}"
        if command[0] == "celery" and celery_split(command)[1][0] == "worker":
            queues = [command[command.index("-Q") + 1], composed[composed.index("-Q") + 1]]
            assert queues[0] == queues[1], f"{name}: k8s consumes {queues[0]}, compose {queues[1]}"


def test_every_k8s_command_and_exec_probe_names_things_that_exist() -> None:
    for name, workload in workloads().items():
        for container in containers(workload):
            env = k8s_env(container)
            report = check_command(k8s_command(container), env, f"{name}.command")
            if report is not None:  # celery: a worker consumes routed queues only
                for queue in report["parsed"][0]["queues"]:
                    assert queue in report["route_queues"], f"{name}: queue {queue!r} is not in the Celery routes"
            for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
                if "exec" in container.get(kind, {}):
                    check_command(exec_probe_argv(container[kind], f"{name}-pod"), env, f"{name}.{kind}")


def test_k8s_environment_names_only_real_settings() -> None:
    for variable, code_path in K8S_NON_SETTINGS.items():
        assert variable in code_path.read_text(), f"{code_path} no longer reads {variable}"
    for kind in ("ConfigMap", "Secret"):
        for name in k8s(kind):
            unknown = set(config_data(kind, name)) - SETTING_NAMES
            assert not unknown, f"{kind} {name}: {sorted(unknown)} are not settings in services/shared/settings.py"
    for name, workload in workloads().items():
        for container in containers(workload):
            for item in container.get("env", []):
                assert item["name"] in SETTING_NAMES | set(K8S_NON_SETTINGS), f"{name}: {item['name']} is no setting"
            for source in container.get("envFrom", []):
                assert not source.get("prefix"), f"{name}: a prefix would rename every setting"
            k8s_env(container)  # every referenced ConfigMap, Secret and key exists


def test_k8s_secret_holds_the_credentials_and_only_placeholders() -> None:
    secret = config_data("Secret", "contentops-secrets")
    config = config_data("ConfigMap", "contentops-config")
    assert {"CONTENTOPS_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY",
            "WEB_SERVICE_TOKEN"} <= set(secret)
    assert not set(config) & SECRET_SETTINGS, "credentials belong in the Secret"
    for key, value in secret.items():
        assert value == "" or "CHANGE-ME" in value, f"{key}: the template holds placeholders only, never a credential"
    assert secret["CONTENTOPS_SECRET_KEY"], "empty would give every pod its own generated key"


def test_k8s_containers_run_on_the_production_stores() -> None:
    for name, workload in workloads().items():
        for container in containers(workload):
            env = k8s_env(container)
            settings = load_settings(env)  # also proves every value parses
            assert settings.database_url.startswith("postgresql+psycopg://"), name
            assert settings.auto_migrate is False, f"{name}: migrations run once, in the migrate Job"
            assert not settings.embedded_tasks, f"{name}: needs REDIS_URL"
            assert settings.minio_endpoint and settings.minio_public_endpoint, name
            assert env["CONTENTOPS_SECRET_KEY"], f"{name}: every replica must share the signing key"
            assert "WEB_SERVICE_TOKEN" in env, name
            refs = [s.get("configMapRef", s.get("secretRef"))["name"] for s in container.get("envFrom", [])]
            assert refs == ["contentops-config", "contentops-secrets"], f"{name}: one shared configuration"


def test_k8s_servers_listen_where_their_services_and_probes_point(tmp_path: Path) -> None:
    servers = k8s_servers()
    assert set(servers) == {"CONTENT_GRPC_ADDR", "DISTRIBUTION_GRPC_ADDR", "TRACKING_GRPC_ADDR", "WEB_ADDR"}
    for name, port in servers.values():
        deployment = k8s("Deployment")[name]
        container = the_container(deployment)
        assert port in container_ports(container).values(), f"{name} listens on {port}, not a container port"
        service_address(name, port)
        module = k8s_command(container)[2]
        for kind in ("readinessProbe", "livenessProbe"):
            probe = container[kind]
            if is_grpc_server(module):
                assert set(probe) & {"grpc", "exec", "httpGet", "tcpSocket"} == {"grpc"}, f"{name}.{kind}: use gRPC health"
                assert probe["grpc"]["port"] == port and not probe["grpc"].get("service"), f"{name}.{kind}"
            else:
                assert probe["httpGet"]["path"] == "/healthz" and "/healthz" in web_get_routes(tmp_path), f"{name}.{kind}"
                assert resolve_port(deployment, probe["httpGet"]["port"]) == port, f"{name}.{kind}"


def test_k8s_clients_dial_the_services() -> None:
    servers = k8s_servers()
    dialed = 0
    for name, workload in workloads().items():
        for container in containers(workload):
            command = k8s_command(container)
            if command[:2] != ["python", "-m"]:
                continue
            for setting in dialed_settings(command[2]):
                server, port = servers[setting]
                value = k8s_env(container).get(setting, SETTING_DEFAULTS[setting])
                assert value == grpc_target(server, port), f"{name}: {setting}={value}"
                dialed += 1
    assert dialed >= 3
    # The ConfigMap holds the clients' view of every gRPC server; each server overrides its own.
    config = config_data("ConfigMap", "contentops-config")
    for setting, (server, port) in servers.items():
        if setting in config:
            assert config[setting] == grpc_target(server, port), setting


def grpc_target(deployment: str, port: int) -> str:
    """How a client reaches a gRPC Deployment: gRPC's DNS resolver on its headless Service, which lists every ready pod
    (a ClusterIP Service would hand the client's one long-lived connection to one pod, and round-robin would have
    nothing to balance). A headless Service does no port mapping, so its port must be the container's."""
    address = service_address(deployment, port)
    service = k8s("Service")[host_of(address)]
    assert service["spec"].get("clusterIP") == "None", f"{host_of(address)}: gRPC Services must be headless"
    assert port_of(address) == port, f"{address}: a headless Service's port must be the container port {port}"
    return f"dns:///{address}"


def test_k8s_metrics_are_served_where_the_annotations_say(tmp_path: Path) -> None:
    for name, deployment in k8s("Deployment").items():
        container = the_container(deployment)
        command = k8s_command(container)
        env = k8s_env(container)
        annotations = deployment["spec"]["template"]["metadata"].get("annotations") or {}
        serves = serves_metrics_on_metrics_addr(command)
        assert bool(env.get("METRICS_ADDR")) == serves, f"{name}: METRICS_ADDR set iff the process serves it there"
        if serves:
            address = env["METRICS_ADDR"]
            assert host_of(address) in WILDCARD_HOSTS, f"{name}: Prometheus could not reach {address}"
            assert container_ports(container).get("metrics") == port_of(address), f"{name}: name the port 'metrics'"
            port = port_of(address)
        elif command[:3] == ["python", "-m", "services.web"]:
            port = port_of(env["WEB_ADDR"])  # the edge serves /metrics itself
            assert "/metrics" in web_get_routes(tmp_path), "the edge no longer serves /metrics"
        else:
            assert "prometheus.io/scrape" not in annotations, f"{name} serves no metrics"
            continue
        assert annotations.get("prometheus.io/scrape") == "true", name
        assert annotations.get("prometheus.io/port") == str(port), name
        assert annotations.get("prometheus.io/path") == "/metrics", name
        if command[0] == "celery" and "--pool" not in command:  # prefork: children's samples via the multiprocess dir
            multiproc = env.get("PROMETHEUS_MULTIPROC_DIR")
            assert multiproc and writable(container, multiproc), f"{name}: PROMETHEUS_MULTIPROC_DIR must be a writable dir"
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert multiproc in mounts, f"{name}: give the multiprocess dir its own emptyDir (empty when the pod starts)"


def test_k8s_probes_exist_and_fit_each_process() -> None:
    for name, deployment in k8s("Deployment").items():
        container = the_container(deployment)
        command = k8s_command(container)
        assert "livenessProbe" in container, f"{name} needs a liveness probe"
        routed = any(selected_workloads(s["spec"]["selector"]) == [name] for s in k8s("Service").values())
        rolling = deployment["spec"].get("strategy", {}).get("type", "RollingUpdate") == "RollingUpdate"
        if routed or rolling:
            assert "readinessProbe" in container, f"{name}: a Service or a rolling update waits on its readiness"
        for kind in ("readinessProbe", "livenessProbe"):
            probe = container.get(kind)
            if probe is None:
                continue
            if "httpGet" in probe:
                resolve_port(deployment, probe["httpGet"]["port"])
            if "exec" in probe:
                probe_argv = exec_probe_argv(probe, f"{name}-pod")
                assert probe.get("timeoutSeconds", 1) >= 10, f"{name}.{kind}: a Python process needs more than 1 s"
                if command[0] == "celery" and celery_split(command)[1][0] == "worker":
                    check_worker_probe(command, probe_argv, f"{name}-pod")
                    timeout = float(probe_argv[probe_argv.index("--timeout") + 1])
                    assert probe["timeoutSeconds"] > timeout, f"{name}.{kind}: the ping's own timeout must come first"
                if command[0] == "celery" and celery_split(command)[1][0] == "beat":
                    check_beat_probe(command, probe_argv, k8s_env(container))
                    assert writable(container, beat_schedule_arg(command)), f"{name}: beat cannot write its schedule"
            if name == "tracking-consumer":
                assert probe["httpGet"]["path"] == "/metrics"
                assert resolve_port(deployment, probe["httpGet"]["port"]) == port_of(k8s_env(container)["METRICS_ADDR"])


def test_k8s_services_select_one_workload_and_existing_ports() -> None:
    for name, service in k8s("Service").items():
        targets = selected_workloads(service["spec"]["selector"])
        assert len(targets) == 1 and targets[0] in k8s("Deployment"), f"Service {name} selects {targets}"
        for entry in service["spec"]["ports"]:
            resolve_port(workloads()[targets[0]], entry.get("targetPort", entry["port"]))
            assert entry.get("name"), f"Service {name}: name its ports"


def test_k8s_deployment_selectors_match_their_own_pods_only() -> None:
    for name, workload in workloads().items():
        if workload["kind"] == "Deployment":
            selector = match_labels(workload["spec"]["selector"])
            assert selected_workloads(selector) == [name], f"{name}'s selector also matches other pods"
        assert pod_labels(workload)["app.kubernetes.io/component"] == name


def test_k8s_autoscalers_target_deployments_that_can_scale_on_cpu() -> None:
    deployments = k8s("Deployment")
    for name, hpa in k8s("HorizontalPodAutoscaler").items():
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment") and ref["name"] in deployments, name
        target = deployments[ref["name"]]
        assert "replicas" not in target["spec"], f"{ref['name']}: the HPA owns the replica count; apply would reset it"
        assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"], name
        (metric,) = hpa["spec"]["metrics"]
        assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu", name
        assert metric["resource"]["target"]["type"] == "Utilization", name
        for container in pod_spec(target)["containers"]:
            assert "cpu" in container["resources"]["requests"], f"{ref['name']}: CPU utilisation needs a CPU request"
    assert "beat" not in {h["spec"]["scaleTargetRef"]["name"] for h in k8s("HorizontalPodAutoscaler").values()}


def _min_replicas(name: str) -> int:
    for hpa in k8s("HorizontalPodAutoscaler").values():
        if hpa["spec"]["scaleTargetRef"]["name"] == name:
            return int(hpa["spec"]["minReplicas"])
    return int(k8s("Deployment")[name]["spec"].get("replicas", 1))


def test_k8s_disruption_budgets_cover_one_deployment_and_never_block_a_drain() -> None:
    for name, pdb in k8s("PodDisruptionBudget").items():
        targets = selected_workloads(match_labels(pdb["spec"]["selector"]))
        assert len(targets) == 1 and targets[0] in k8s("Deployment"), f"PDB {name} selects {targets}"
        replicas = _min_replicas(targets[0])
        assert replicas >= 2, f"PDB {name}: {targets[0]} runs {replicas} replica(s); a budget keeps nothing up"
        if "minAvailable" in pdb["spec"]:
            assert int(pdb["spec"]["minAvailable"]) < replicas, f"PDB {name} would block every eviction"
        else:
            assert int(pdb["spec"]["maxUnavailable"]) >= 1, f"PDB {name} would block every eviction"


def test_k8s_beat_is_a_singleton() -> None:
    beat = k8s("Deployment")["beat"]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    assert not any(selected_workloads(match_labels(p["spec"]["selector"])) == ["beat"]
                   for p in k8s("PodDisruptionBudget").values())
    beats = [n for n, w in workloads().items() if k8s_command(the_container(w))[:1] == ["celery"]
             and celery_split(k8s_command(the_container(w)))[1][0] == "beat"]
    assert beats == ["beat"]


def test_k8s_grpc_servers_get_longer_to_stop_than_their_drain_grace() -> None:
    for setting, (name, _port) in k8s_servers().items():
        deployment = k8s("Deployment")[name]
        grace = load_settings(k8s_env(the_container(deployment))).shutdown_grace_seconds
        if setting != "WEB_ADDR":
            assert pod_spec(deployment).get("terminationGracePeriodSeconds", 30) > grace, name


def _dockerfile_user() -> tuple[str, int, int]:
    user, _, group = next(i.args for i in reversed(runtime_stage()) if i.keyword == "USER").partition(":")
    runs = " ".join(i.args for i in runtime_stage() if i.keyword == "RUN")
    uid = re.search(rf"useradd\b[^&;]*?--uid[ =](\d+)\b[^&;]*\b{re.escape(user)}\b", runs)
    gid = re.search(rf"groupadd\b[^&;]*?--gid[ =](\d+)\b[^&;]*\b{re.escape(group or user)}\b", runs)
    assert uid and gid, "the Dockerfile must create its user and group with fixed --uid/--gid (Kubernetes needs the number)"
    return user, int(uid.group(1)), int(gid.group(1))


def test_k8s_pods_run_as_the_dockerfile_user_within_the_restricted_pod_security_standard() -> None:
    _user, uid, gid = _dockerfile_user()
    assert uid != 0
    (namespace,) = k8s("Namespace").values()
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for name, workload in workloads().items():
        spec = pod_spec(workload)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert (pod["runAsUser"], pod["runAsGroup"]) == (uid, gid), f"{name}: run as the Dockerfile's user {uid}:{gid}"
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, f"{name}: the app never calls the Kubernetes API"
        # Service links would add CONTENT_PORT, WEB_SERVICE_HOST, ... beside the settings (WEB_SERVICE_TOKEN).
        assert spec["enableServiceLinks"] is False, name
        volumes = {v["name"] for v in spec.get("volumes", [])}
        for container in containers(workload):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and not sc.get("privileged"), name
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), name
            assert sc.get("runAsUser", uid) == uid and sc.get("runAsNonRoot", True) is True, name
            assert sc["readOnlyRootFilesystem"] is True, name
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{name}: no volume {mount['name']}"
            env = k8s_env(container)
            for path in ("/tmp", env["CONTENTOPS_DATA_DIR"]):  # spooled uploads; HOME and the data folder
                assert writable(container, path), f"{name}: {path} must be a writable volume"


def test_k8s_containers_share_one_image_and_have_resources() -> None:
    (image,) = kustomization()["images"]
    for name, workload in workloads().items():
        for container in containers(workload):
            assert container["image"].split(":")[0] == image["name"], f"{name} runs another image"
            resources = container["resources"]
            for key in ("cpu", "memory"):
                assert key in resources["requests"], f"{name}: request {key}"
            assert "memory" in resources["limits"], f"{name}: limit memory"
            for key, limit in resources["limits"].items():
                assert quantity(resources["requests"][key]) <= quantity(limit), f"{name}: {key} request over its limit"
    assert len({c["image"] for w in workloads().values() for c in containers(w)}) == 1


def test_k8s_readme_commands_exist() -> None:
    readme = (K8S / "README.md").read_text()
    commands = re.findall(r"(?:^|\s)(contentops (?:migrate|admin|post|topic|asset)\b[^\n`|]*)", readme)
    assert any("create-user --role service" in c for c in commands)
    for command in commands:
        check_contentops(shlex.split(command.replace("<name>", "name")))
    for name in re.findall(r"\bdeployment/([a-z][a-z-]*)", readme):
        assert name in k8s("Deployment"), f"README.md: no Deployment {name}"
    for file in re.findall(r"`([a-z-]+\.yaml)`", readme):
        assert (K8S / file).exists(), f"README.md: no {file}"


# ---- the inline `python -c` probes, run for real ----------------------------------------------------


def python_c_probes() -> list[tuple[str, list[str]]]:
    found = []
    for name, svc in app_services(compose()).items():
        if has_healthcheck(svc) and healthcheck_argv(svc)[:2] == ["python", "-c"]:
            found.append((f"compose {name}", healthcheck_argv(svc)))
    for name, workload in workloads().items():
        for container in containers(workload):
            for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
                if "exec" in container.get(kind, {}):
                    command = exec_probe_argv(container[kind], "pod")
                    if command[:2] == ["python", "-c"]:
                        found.append((f"k8s {name}.{kind}", command))
    return found


def _run_probe(command: list[str]) -> int:
    return subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, timeout=60, cwd=ROOT).returncode


@pytest.fixture
def web_edge(tmp_path: Path) -> Any:
    from services.web.app import build_app
    from services.web.backends import Backends
    from services.web.threaded import ThreadedServer

    settings = load_settings({"CONTENTOPS_DATA_DIR": str(tmp_path), "CONTENTOPS_SECRET_KEY": "probe"})
    port = infra.free_port()
    server = ThreadedServer(build_app(settings, Backends(settings, "token")), "127.0.0.1", port, log_level="warning").start()
    yield port
    server.stop()


def test_python_c_probes_are_all_of_a_kind_tested_here() -> None:
    probes = python_c_probes()
    kinds = {python_c_kind(command) for _where, command in probes}
    assert kinds == {"http", "beat-schedule"}, probes
    assert len({command[2] for _where, command in probes if python_c_kind(command) == "http"}) == 1
    assert len({command[2] for _where, command in probes if python_c_kind(command) == "beat-schedule"}) == 1


def test_python_c_http_probe_passes_on_a_200_and_fails_otherwise(web_edge: int) -> None:
    from services.shared.metrics import serve_metrics

    (snippet,) = {command[2] for _where, command in python_c_probes() if python_c_kind(command) == "http"}
    probe = ["python", "-c", snippet]
    assert _run_probe([*probe, f"http://127.0.0.1:{web_edge}/healthz"]) == 0
    assert _run_probe([*probe, f"http://127.0.0.1:{web_edge}/no-such-page"]) == 1
    assert _run_probe([*probe, f"http://127.0.0.1:{infra.free_port()}/healthz"]) == 1  # nothing listens
    metrics_port = infra.free_port()
    server = serve_metrics(f"127.0.0.1:{metrics_port}")  # what the consumer runs on METRICS_ADDR
    try:
        assert _run_probe([*probe, f"http://127.0.0.1:{metrics_port}/metrics"]) == 0
    finally:
        server.shutdown()


def test_python_c_beat_probe_passes_while_the_schedule_file_is_fresh(tmp_path: Path) -> None:
    (command,) = {tuple(c) for _where, c in python_c_probes() if python_c_kind(c) == "beat-schedule"}
    schedule = tmp_path / "celerybeat-schedule"
    probe = [*command[:3], str(schedule), command[4]]
    assert _run_probe(probe) == 1  # beat never wrote it
    for suffix in ("", ".dat"):  # dbm.gnu writes the file itself, dbm.dumb a .dat beside it
        path = schedule.with_name(schedule.name + suffix)
        path.write_bytes(b"")
        assert _run_probe(probe) == 0
        old = path.stat().st_mtime - float(command[4]) - 60
        os.utime(path, (old, old))
        assert _run_probe(probe) == 1
        path.unlink()
