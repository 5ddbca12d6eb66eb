"""deploy/: what would break a deployment, checked without one (no Docker, no cluster, no network).

* every YAML file parses and is one of the kinds checked here: compose file, Helm values, Kubernetes
  manifests (a DaskCluster and its worker groups, the client Job, the volume claim);
* every ``dask scheduler``/``dask worker`` command line in them (and the one the Helm chart makes from its
  values, and the one of ``start-gpu-workers.sh``) is parsed by Dask's own command-line parser, and
  every ``bragg-dask`` command line by ours, up to the point where the run would start;
* the Dockerfiles: CPU-only torch in the CPU image, a CUDA build in the GPU one, the Makefile's torch pin,
  sources that exist, the commands the YAML files call;
* every Python example runs against stand-ins for its cluster and for ``bragg_dask.simulate`` (whose
  arguments are bound to the real signature), with the real ``simulation_from_args``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import yaml

import bragg_dask

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
YAML_FILES = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
EXAMPLES = sorted(DEPLOY.rglob("*.py"))
CPU_DOCKERFILE, GPU_DOCKERFILE = DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.gpu"
TORCH_PIN = re.search(r"torch==([\w.+]+)", (ROOT / "Makefile").read_text()).group(1)
CPU_IMAGE, GPU_IMAGE = re.compile(r"(^|/)bragg-dask(:[\w.-]+)?$"), re.compile(r"(^|/)bragg-dask-gpu(:[\w.-]+)?$")
HKL = "0 0 1 100\n1 0 0 100\n0 1 0 100\n"  # enough for the examples' -hkl lyso.hkl to parse


def _docs(path: Path) -> list:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _kind(docs: list) -> str:
    if docs and all(isinstance(d, dict) and "apiVersion" in d and "kind" in d for d in docs):
        return "manifests"
    if len(docs) == 1 and "services" in docs[0]:
        return "compose"
    if len(docs) == 1 and {"scheduler", "worker"} <= set(docs[0]):
        return "helm-values"
    return "unknown"


def _by_kind(kind: str) -> list[tuple[Path, list]]:
    return [(p, d) for p in YAML_FILES if _kind(d := _docs(p)) == kind]


def _manifests() -> list[dict]:
    return [d for _, docs in _by_kind("manifests") for d in docs]


def _one(kind: str) -> dict:
    found = [d for d in _manifests() if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} manifests in deploy/"
    return found[0]


def _pod_specs(doc) -> list[dict]:
    """Every pod spec (a mapping with ``containers``) anywhere in a manifest."""
    if isinstance(doc, list):
        return [s for d in doc for s in _pod_specs(d)]
    if not isinstance(doc, dict):
        return []
    own = [doc] if isinstance(doc.get("containers"), list) else []
    return own + [s for v in doc.values() for s in _pod_specs(v)]


def _argv(container: dict) -> list[str]:
    return [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]


def _dask_cli(argv: list[str]) -> tuple[str, dict]:
    """``(scheduler|worker, parameters)`` of a Dask command line, parsed by Dask's own parser (nothing runs)."""
    from distributed.cli import dask_scheduler, dask_worker

    argv = [re.sub(r"\$\((\w+)\)", "x", a) for a in argv]  # Kubernetes' $(VAR) from the container's env
    if argv[:2] in (["dask", "worker"], ["dask", "scheduler"]):
        kind, rest = argv[1], argv[2:]
    elif argv and argv[0] in ("dask-worker", "dask-scheduler"):
        kind, rest = argv[0].removeprefix("dask-"), argv[1:]
    else:
        raise AssertionError(f"not a Dask scheduler or worker: {argv}")
    main = {"worker": dask_worker.main, "scheduler": dask_scheduler.main}[kind]
    return kind, main.make_context(f"dask {kind}", list(rest)).params


def _resources(params: dict) -> dict[str, float]:
    text = (params.get("resources") or "").replace(",", " ")
    return {k: float(v) for k, v in (pair.split("=") for pair in text.split())}


def _shims(dockerfile: Path) -> set[str]:
    """The ``dask-<name>`` commands a Dockerfile writes into the image's PATH."""
    text = dockerfile.read_text()
    loop = re.search(r"for c in ([\w ]+); do.*?/usr/local/bin/dask-\$c", text, re.S)
    return {f"dask-{c}" for c in loop.group(1).split()} if loop else set()


def _provides(dockerfile: Path, command: str) -> bool:
    return (
        command in ("dask", "bragg-dask", "python")
        or command in _shims(dockerfile)
        or (
            re.search(rf"^COPY\s+\S+\s+/usr/local/bin/{re.escape(command)}\s*$", dockerfile.read_text(), re.M)
            is not None
        )
    )


def _image_dockerfile(image: str) -> Path:
    if GPU_IMAGE.search(image):
        return GPU_DOCKERFILE
    assert CPU_IMAGE.search(image), f"{image} is not one of our images (bragg-dask, bragg-dask-gpu)"
    return CPU_DOCKERFILE


# --- every YAML file ---------------------------------------------------------------------------------


def test_deploy_has_the_files_checked_here():
    names = {p.relative_to(DEPLOY).as_posix() for p in YAML_FILES}
    assert {"docker-compose.yml", "k8s/dask-helm-values.yaml", "k8s/daskcluster.yaml"} <= names
    assert CPU_DOCKERFILE.is_file() and GPU_DOCKERFILE.is_file() and EXAMPLES


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_yaml_file_parses_and_is_of_a_kind_checked_here(path):
    docs = _docs(path)
    assert docs and all(isinstance(d, dict) for d in docs)
    assert _kind(docs) != "unknown", f"{path.name}: neither a compose file, Helm values nor manifests"


def test_every_manifest_names_itself_and_mounts_the_claims_that_exist():
    manifests = _manifests()
    claims = {d["metadata"]["name"] for d in manifests if d["kind"] == "PersistentVolumeClaim"}
    for d in manifests:
        assert d["metadata"]["name"] and "spec" in d, d
        for pod in _pod_specs(d["spec"]):
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for v in volumes.values():
                if "persistentVolumeClaim" in v:
                    assert v["persistentVolumeClaim"]["claimName"] in claims, v
            for c in pod["containers"]:
                _image_dockerfile(c["image"])
                for m in c.get("volumeMounts", []):
                    assert m["name"] in volumes, (d["metadata"]["name"], m)


def test_the_shared_volume_is_read_write_many():
    claim = _one("PersistentVolumeClaim")
    assert "ReadWriteMany" in claim["spec"]["accessModes"]  # pods on several nodes write one store


# --- docker compose ----------------------------------------------------------------------------------


def _compose() -> tuple[Path, dict]:
    ((path, docs),) = _by_kind("compose")
    return path, docs[0]["services"]


def test_compose_builds_our_images_from_the_repository():
    path, services = _compose()
    built = {}
    for name, svc in services.items():
        assert "build" in svc, f"{name}: no build section (compose would try to pull {svc.get('image')})"
        context = (path.parent / svc["build"]["context"]).resolve()
        assert (context / "pyproject.toml").is_file(), f"{name}: the build context is not the repository root"
        dockerfile = (context / svc["build"]["dockerfile"]).resolve()
        assert dockerfile in (CPU_DOCKERFILE, GPU_DOCKERFILE), (name, dockerfile)
        assert _image_dockerfile(svc["image"]) == dockerfile, name
        built.setdefault(svc["image"], set()).add(dockerfile)
    assert all(len(v) == 1 for v in built.values()), built  # one image name, one Dockerfile
    assert CPU_DOCKERFILE in {d for v in built.values() for d in v}


def test_compose_runs_a_scheduler_and_workers_that_reach_it():
    path, services = _compose()
    kinds = {}
    for name, svc in services.items():
        argv = list(svc.get("entrypoint") or []) + list(svc.get("command") or [])
        if argv and argv[0] in ("dask", "dask-worker", "dask-scheduler"):
            kind, params = _dask_cli(argv)
            kinds.setdefault(kind, []).append((name, params))
    ((scheduler_service, _),) = kinds["scheduler"]
    ((name, worker),) = kinds["worker"]
    assert worker["scheduler"] == f"tcp://{scheduler_service}:8786"
    # one torch thread per task and one task thread per process; `--nworkers auto` would override --nthreads
    assert worker["nthreads"] == 1 and worker["n_workers"] != "auto"
    assert services[name]["environment"]["OMP_NUM_THREADS"] == "1"
    assert any(v.endswith(":/data") for v in services[name]["volumes"])


def test_compose_gpu_workers_get_the_gpus_and_start_one_worker_each():
    _, services = _compose()
    ((name, svc),) = [(n, s) for n, s in services.items() if GPU_IMAGE.search(s["image"])]
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    command = svc["command"]
    assert _provides(GPU_DOCKERFILE, command[0]), f"{command[0]} is not in the GPU image"
    assert command[0] == "start-gpu-workers.sh" and command[1] == "tcp://scheduler:8786"


def test_compose_client_runs_bragg_dask_beside_the_workers():
    _, services = _compose()
    client = services["client"]
    assert client["entrypoint"] == ["bragg-dask"] and client["working_dir"] == "/data"
    assert client["volumes"] == services["worker"]["volumes"]  # the store at the same path


def test_start_gpu_workers_script():
    script = DEPLOY / "start-gpu-workers.sh"
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", str(script)], check=True)
    line = next(ln for ln in script.read_text().replace("\\\n", " ").splitlines() if " dask worker " in ln)
    words = shlex.split(line)
    argv = [w for w in words[words.index("dask") :] if w not in ("$@", "&")]
    _, params = _dask_cli(argv)
    assert params["nthreads"] == 1 and _resources(params) == {"GPU": 1.0}
    assert "CUDA_VISIBLE_DEVICES=$i" in words


# --- Kubernetes: the Dask Helm chart -----------------------------------------------------------------


def _helm_values() -> dict:
    ((_, docs),) = _by_kind("helm-values")
    return docs[0]


def _helm_worker_argv(values: dict) -> list[str]:
    """The worker's command line as the chart renders it (templates/dask-worker-deployment.yaml)."""
    w = values["worker"]
    limits = w["resources"]["limits"]  # without limits the chart passes neither --nthreads nor --memory-limit
    return [
        w["image"]["dask_worker"],
        "bragg-dask-scheduler:8786",
        "--nthreads",
        str(w.get("threads_per_worker") or limits["cpu"]),
        "--memory-limit",
        str(limits["memory"]),
        "--no-dashboard",
        *w.get("extraArgs", []),
    ]


def test_helm_values_run_our_image_for_scheduler_and_workers():
    values = _helm_values()
    images = {part: "{repository}:{tag}".format(**values[part]["image"]) for part in ("scheduler", "worker")}
    assert images["scheduler"] == images["worker"], images  # one image: the same Dask on both
    assert _image_dockerfile(images["worker"]) == CPU_DOCKERFILE
    assert values.get("jupyter", {}).get("enabled") is False
    # the chart starts `dask-scheduler ...` (or `dask scheduler` in its newest releases)
    assert _provides(CPU_DOCKERFILE, "dask-scheduler")
    assert _dask_cli(["dask-scheduler", "--port=8786", "--dashboard-address=:8787"])[0] == "scheduler"


def test_helm_worker_command_has_one_torch_thread_per_task_thread():
    values = _helm_values()
    argv = _helm_worker_argv(values)
    assert _provides(CPU_DOCKERFILE, argv[0].split()[0]), f"{argv[0]} is not in the image"
    argv = argv[0].split() + argv[1:]  # "dask worker" as one value of dask_worker is two words
    kind, params = _dask_cli(argv)
    assert kind == "worker"
    limits = values["worker"]["resources"]["limits"]
    assert params["nthreads"] == int(limits["cpu"])  # a task thread per core ...
    env = {e["name"]: e["value"] for e in values["worker"]["env"]}
    assert env["OMP_NUM_THREADS"] == "1"  # ... and torch on one thread in each


def test_helm_workers_mount_the_store_volume():
    values = _helm_values()
    mounts = values["worker"]["mounts"]
    assert {m["mountPath"] for m in mounts["volumeMounts"]} == {"/data"}
    claims = {v["persistentVolumeClaim"]["claimName"] for v in mounts["volumes"]}
    assert claims == {_one("PersistentVolumeClaim")["metadata"]["name"]}


# --- Kubernetes: the Dask operator -------------------------------------------------------------------


def _worker_groups() -> list[tuple[str, dict]]:
    cluster = _one("DaskCluster")
    groups = [(f"{cluster['metadata']['name']}-default", cluster["spec"]["worker"])]
    for d in _manifests():
        if d["kind"] == "DaskWorkerGroup":
            assert d["spec"]["cluster"] == cluster["metadata"]["name"], d["metadata"]["name"]
            groups.append((d["metadata"]["name"], d["spec"]["worker"]))
    return groups


def _worker(group: dict) -> tuple[dict, dict]:
    (container,) = group["spec"]["containers"]
    kind, params = _dask_cli(_argv(container))
    assert kind == "worker"
    return container, params


def test_daskcluster_has_a_scheduler_and_its_service():
    cluster = _one("DaskCluster")
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    (container,) = cluster["spec"]["scheduler"]["spec"]["containers"]
    assert _dask_cli(_argv(container))[0] == "scheduler"
    assert _image_dockerfile(container["image"]) == CPU_DOCKERFILE
    service = cluster["spec"]["scheduler"]["service"]
    assert service["selector"] == {
        "dask.org/cluster-name": cluster["metadata"]["name"],
        "dask.org/component": "scheduler",
    }
    assert 8786 in {p["port"] for p in service["ports"]}
    assert cluster["spec"]["worker"]["spec"]["containers"]


def test_daskcluster_gpu_workers_take_one_gpu_and_advertise_it():
    gpu = [(n, g) for n, g in _worker_groups() if "nvidia.com/gpu" in _worker(g)[0]["resources"]["limits"]]
    assert gpu, "no worker group asks for nvidia.com/gpu"
    for name, group in gpu:
        container, params = _worker(group)
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1, name
        assert _resources(params) == {"GPU": 1.0}, name  # what bragg-dask --device cuda asks of each tile task
        assert params["nthreads"] == 1 and (params["n_workers"] or "1") == "1", name
        assert _image_dockerfile(container["image"]) == GPU_DOCKERFILE, name


def test_daskcluster_cpu_workers_have_one_torch_thread_per_task_thread():
    cpu = [(n, g) for n, g in _worker_groups() if "nvidia.com/gpu" not in _worker(g)[0]["resources"]["limits"]]
    assert cpu, "no CPU worker group"
    for name, group in cpu:
        container, params = _worker(group)
        assert params["nthreads"] == int(container["resources"]["limits"]["cpu"]), name
        assert {e["name"]: e["value"] for e in container["env"]}["OMP_NUM_THREADS"] == "1", name
        assert "GPU" not in _resources(params), name


def test_every_worker_mounts_the_store_at_the_clients_path():
    (client,) = _one("Job")["spec"]["template"]["spec"]["containers"]
    client_mounts = {m["mountPath"] for m in client["volumeMounts"]}
    for name, group in _worker_groups():
        (container,) = group["spec"]["containers"]
        assert {m["mountPath"] for m in container["volumeMounts"]} == client_mounts == {"/data"}, name


def test_the_job_reaches_the_scheduler_of_either_cluster():
    values = _helm_values()
    helm_service = f"{values['fullnameOverride']}-scheduler"
    operator_service = f"{_one('DaskCluster')['metadata']['name']}-scheduler"
    (client,) = _one("Job")["spec"]["template"]["spec"]["containers"]
    argv = _argv(client)
    address = argv[argv.index("--scheduler") + 1]
    assert address == f"tcp://{helm_service}:{values['scheduler'].get('servicePort', 8786)}"
    assert address == f"tcp://{operator_service}:8786"


def test_the_job_runs_bragg_dask_up_to_the_start_of_the_run(tmp_path, monkeypatch):
    """The Job's command line through ``bragg_dask.cli.run`` with its /data as a temporary folder: the
    flags, the inputs and the outputs are checked as for a real run, which stops where it would start."""
    from bragg_dask import cli, executors

    (client,) = _one("Job")["spec"]["template"]["spec"]["containers"]
    argv = _argv(client)
    assert argv[0] == "bragg-dask" and _provides(_image_dockerfile(client["image"]), "bragg-dask")
    assert client["workingDir"] == "/data"
    store = argv[argv.index("--zarr") + 1]
    assert store.startswith("/data/")
    (tmp_path / "lyso.hkl").write_text(HKL)
    monkeypatch.chdir(tmp_path)
    seen = {}

    class Started(Exception):
        pass

    def executor_for(**kw):
        seen.update(kw)
        return object()

    def execute(sim, settings, executor):
        seen["settings"] = settings
        raise Started

    monkeypatch.setattr(executors, "executor_for", executor_for)
    monkeypatch.setattr(executors, "execute", execute)
    args = [str(tmp_path) + a.removeprefix("/data") if a.startswith("/data/") else a for a in argv[1:]]
    with pytest.raises(Started):
        cli.run(args)
    assert seen["store"] == str(tmp_path / store.removeprefix("/data/"))
    assert seen["cluster"].scheduler == argv[argv.index("--scheduler") + 1]
    assert seen["settings"].progress is False  # -noprogress: no progress bar in the Job's log


# --- Dockerfiles -------------------------------------------------------------------------------------


def _run_lines(dockerfile: Path) -> list[str]:
    text = dockerfile.read_text().replace("\\\n", " ")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def _torch_install(dockerfile: Path) -> tuple[int, str]:
    lines = _run_lines(dockerfile)
    found = [(i, ln) for i, ln in enumerate(lines) if ln.startswith("RUN") and re.search(r"\btorch==", ln)]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("dockerfile", [CPU_DOCKERFILE, GPU_DOCKERFILE], ids=lambda p: p.name)
def test_dockerfile_installs_the_pinned_torch_before_the_package(dockerfile):
    i, line = _torch_install(dockerfile)
    assert f"torch=={TORCH_PIN}" in line, f"{dockerfile.name}: torch pin differs from the Makefile's {TORCH_PIN}"
    lines = _run_lines(dockerfile)
    package = [j for j, ln in enumerate(lines) if ln.startswith("RUN") and re.search(r"pip install .*\s\"?\.", ln)]
    assert package and min(package) > i, "the package must come after torch, or pip pulls the default torch"
    assert lines[0].startswith("FROM ")


def test_cpu_dockerfile_takes_torch_from_the_cpu_wheel_index():
    _, line = _torch_install(CPU_DOCKERFILE)
    assert "--index-url https://download.pytorch.org/whl/cpu" in line


def test_gpu_dockerfile_takes_a_cuda_build_of_torch():
    text = GPU_DOCKERFILE.read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.M).group(1)
    _, line = _torch_install(GPU_DOCKERFILE)
    index = re.search(r"--index-url\s+\"?(\S+?)\"?(\s|$)", line)
    if index:
        url = index.group(1)
        for arg, value in re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M):
            url = url.replace("${%s}" % arg, value).replace("$%s" % arg, value)
        assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", url), url
    else:
        assert re.match(r"(pytorch/pytorch|nvidia/cuda):\S*cuda", base), base


@pytest.mark.parametrize("dockerfile", [CPU_DOCKERFILE, GPU_DOCKERFILE], ids=lambda p: p.name)
def test_dockerfile_copies_files_that_exist_and_leaves_the_command_to_its_users(dockerfile):
    for line in _run_lines(dockerfile):
        if line.startswith("COPY") and "--from" not in line:
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"{dockerfile.name}: {src} (relative to the repository root)"
    # the Helm chart and the operator give the whole command as args; an ENTRYPOINT would take them as its own
    assert not any(line.startswith("ENTRYPOINT") for line in _run_lines(dockerfile))
    assert {"dask-scheduler", "dask-worker"} <= _shims(dockerfile)
    assert any(re.match(r"ENV\s.*\bOMP_NUM_THREADS=1\b", line) for line in _run_lines(dockerfile))


# --- Python examples ---------------------------------------------------------------------------------

# dask-jobqueue's SLURMCluster keywords (dask_jobqueue.slurm.SLURMCluster, its Job and JobQueueCluster)
JOBQUEUE = {
    "queue",
    "project",
    "account",
    "walltime",
    "job_cpu",
    "job_mem",
    "cores",
    "memory",
    "processes",
    "nanny",
    "protocol",
    "security",
    "interface",
    "death_timeout",
    "local_directory",
    "worker_command",
    "worker_extra_args",
    "job_extra_directives",
    "job_script_prologue",
    "job_script_epilogue",
    "job_directives_skip",
    "log_directory",
    "shebang",
    "python",
    "job_name",
    "config_name",
    "name",
    "n_workers",
    "loop",
    "shared_temp_directory",
    "silence_logs",
    "asynchronous",
    "dashboard_address",
    "host",
    "scheduler_options",
    "scheduler_cls",
    "job_cls",
}


class _FakeSLURMCluster:
    def __init__(self, **kwargs):
        unknown = set(kwargs) - JOBQUEUE
        assert not unknown, f"SLURMCluster has no keyword {sorted(unknown)}"
        self.dashboard_link = "http://scheduler:8787/status"

    def scale(self, n=None, jobs=0, memory=None, cores=None):
        pass

    def close(self):
        pass


class _FakeClient:
    def __init__(self, cluster=None, **kwargs):
        self.cluster = cluster
        self.dashboard_link = "http://scheduler:8787/status"

    def close(self):
        pass


def _check_simulate_call(args: tuple, kwargs: dict) -> None:
    from bragg_dask.api import simulate
    from bragg_dask.settings import RunSettings

    bound = inspect.signature(simulate).bind(*args, **kwargs)  # a TypeError for a keyword it does not take
    RunSettings.of(bound.arguments.get("settings"), **bound.arguments.get("choices", {}))  # and for a bad value


def _simulate_keywords(names: set[str]) -> set[str]:
    """Those of ``names`` that ``bragg_dask.simulate`` does not take (its own or a RunSettings field)."""
    from bragg_dask.api import simulate
    from bragg_dask.settings import RunSettings

    return names - set(inspect.signature(simulate).parameters) - {f.name for f in dataclasses.fields(RunSettings)}


def _docstring_snippets(source: str) -> list[str]:
    """The code blocks (``::`` then indented lines) of a module's docstring."""
    doc = ast.get_docstring(ast.parse(source)) or ""
    return [textwrap.dedent(b) for b in re.findall(r"::\n\n((?:(?: {4}.*)?\n)+)", doc + "\n")]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_example_uses_only_bragg_dask_names_that_exist(path):
    source = path.read_text()
    trees = [ast.parse(source, str(path))] + [ast.parse(s) for s in _docstring_snippets(source)]
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "bragg_dask":
                assert node.attr in bragg_dask.__all__ and getattr(bragg_dask, node.attr) is not None, node.attr
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "SLURMCluster":
                assert {k.arg for k in node.keywords} <= JOBQUEUE, ast.unparse(node)
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "bragg_dask.simulate":
                assert not _simulate_keywords({k.arg for k in node.keywords}), ast.unparse(node)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_example_runs_against_stand_ins_for_its_cluster(path, tmp_path, monkeypatch):
    import distributed

    calls = []

    def simulate(*args, **kwargs):
        _check_simulate_call(args, kwargs)
        calls.append(kwargs)

    jobqueue = types.ModuleType("dask_jobqueue")
    jobqueue.SLURMCluster = _FakeSLURMCluster
    monkeypatch.setitem(sys.modules, "dask_jobqueue", jobqueue)
    monkeypatch.setattr(distributed, "Client", _FakeClient)
    monkeypatch.setattr(bragg_dask, "simulate", simulate)
    (tmp_path / "lyso.hkl").write_text(HKL)
    monkeypatch.chdir(tmp_path)
    code = compile(path.read_text(), str(path), "exec")
    exec(code, {"__name__": "__main__", "__file__": str(path)})
    assert calls and all(isinstance(c.get("client"), _FakeClient) and c.get("store") for c in calls)
