"""deploy/ checked against the code, without a container engine.

docker-compose.yml is parsed with PyYAML (and interpolated the way Compose
does), the Dockerfile as text. Every name the deployment mentions — setting,
module, console script, Celery app, queue, port, credential, bucket — must be
one the code has, so renaming any of them in services/ fails here. The gRPC
health check the containers run (services/shared/healthcheck.py) is tested
against a live server at the end.
"""

from __future__ import annotations

import importlib.util
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
                     "tracking-consumer", "worker", "beat"}
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
    assert set(app_services(doc)) == {"migrate", "content", "distribution", "tracking", "tracking-consumer", "worker", "beat"}
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
