"""The deployment files against the code: docs/configuration.md is generated
from Settings and up to date; compose.yaml and the Kubernetes manifests parse
and set only LIVECORE_* variables that exist, with values Settings accepts;
the shutdown timings agree; the dashboard shows only (and all) our metrics.

Docker is not available here, so these files are checked structurally; nginx.conf
is run for real in test_nginx.py.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import livecore
from livecore import metrics as livecore_metrics
from livecore import settings_doc
from livecore.settings import Settings
from tests.support import ROOT

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
LIVECORE_VAR = re.compile(r"\bLIVECORE_[A-Z0-9_]+\b")
# Compose interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def settings_from(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings exactly as a process with this environment would read them."""
    for name in settings_doc.env_vars():
        monkeypatch.delenv(name, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    for cls in settings_doc.settings_classes():
        cls(_env_file=None)  # type: ignore[call-arg]  # raises if a value does not parse
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    for name in settings_doc.env_vars():
        monkeypatch.delenv(name, raising=False)
    return settings


def unknown_vars(names: set[str]) -> set[str]:
    return {n for n in names if n.startswith("LIVECORE_")} - settings_doc.env_vars()


def seconds(value: str | int) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", str(value))
    assert m, value
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[m.group(2)]


# ---- docs/configuration.md ---------------------------------------------------------


def test_configuration_doc_is_up_to_date() -> None:
    doc = ROOT / "docs" / "configuration.md"
    assert doc.read_text(encoding="utf-8") == settings_doc.render(), \
        "docs/configuration.md is stale: run `python -m livecore.settings_doc`"
    check = subprocess.run([sys.executable, "-m", "livecore.settings_doc", "--check"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr


def test_configuration_doc_lists_every_setting() -> None:
    text = settings_doc.render()
    for name, field in Settings.model_fields.items():
        assert f"`LIVECORE_{name.upper()}`" in text
        assert field.description, f"Settings.{name} has no description for docs/configuration.md"


# ---- compose ---------------------------------------------------------------------


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return doc


def interpolate(value: Any) -> str:
    """Compose's variable substitution, with defaults taken and required
    variables given a placeholder."""
    def sub(m: re.Match[str]) -> str:
        op, arg = m.group(2), m.group(3) or ""
        return arg if op in (":-", "-") else "x" * 40
    return INTERPOLATION.sub(sub, str(value))


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(v) for k, v in env.items()}


def test_compose_services() -> None:
    services = compose()["services"]
    assert {"gateway-1", "gateway-2", "valkey", "postgres", "migrate", "nginx"} <= set(services)
    gateways = [s for name, s in services.items() if name.startswith("gateway-")]
    assert len(gateways) == 2
    for gw in gateways:
        assert gw["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert "/readyz" in " ".join(gw["healthcheck"]["test"])
        assert gw["build"]["dockerfile"] == "deploy/Dockerfile"
    assert len({gw["environment"]["LIVECORE_NODE_ID"] for gw in gateways}) == 2
    valkey = " ".join(services["valkey"]["command"])
    assert "--appendonly yes" in valkey and "noeviction" in valkey
    assert any(v.startswith("valkey-data:") for v in services["valkey"]["volumes"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert any(v.startswith("./nginx.conf:") for v in services["nginx"]["volumes"])
    assert set(compose()["volumes"]) >= {"valkey-data", "pg-data"}


def test_compose_sets_only_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    assert not unknown_vars(set(LIVECORE_VAR.findall(text)))
    for name, service in compose()["services"].items():
        env = env_of(service)
        assert not unknown_vars(set(env)), name
        if any(k.startswith("LIVECORE_") for k in env):
            settings_from(env, monkeypatch)  # raises if a value does not parse


def test_compose_gateways_drain_within_the_stop_grace_period(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, service in compose()["services"].items():
        if not name.startswith("gateway-"):
            continue
        settings = settings_from(env_of(service), monkeypatch)
        assert settings.redis_url and settings.database_url and settings.node_id
        assert settings.drain_s + 2 <= seconds(service["stop_grace_period"]), name
        assert settings.secret != Settings.model_fields["secret"].default, "compose must not run on the dev secret"


# ---- Kubernetes ---------------------------------------------------------------------


def k8s_objects() -> list[dict[str, Any]]:
    objects = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                doc["__file__"] = path.name
                objects.append(doc)
    return objects


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in k8s_objects() if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def pod_env_names(pod_spec: dict[str, Any]) -> set[str]:
    return {e["name"] for c in pod_spec["containers"] for e in c.get("env", [])}


def test_k8s_manifests_parse_and_are_complete() -> None:
    kinds = {o["kind"] for o in k8s_objects()}
    assert {"Deployment", "Service", "Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "ConfigMap", "Secret", "Job", "Kustomization", "Namespace"} <= kinds
    kustomization = one("Kustomization")
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed <= on_disk
    assert on_disk - listed == {"ingress-video.yaml"}, "every manifest but the opt-in one is applied"
    for o in k8s_objects():
        if o["kind"] not in ("Kustomization", "Namespace"):
            assert o["metadata"].get("namespace") == "livecore", o["__file__"]


def test_k8s_sets_only_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for path in K8S.glob("*.yaml"):
        assert not unknown_vars(set(LIVECORE_VAR.findall(path.read_text(encoding="utf-8")))), path.name
    config = one("ConfigMap", "livecore-config")["data"]
    secret = one("Secret", "livecore-secrets")["stringData"]
    deployment = one("Deployment", "livecore-gateway")
    pod = deployment["spec"]["template"]["spec"]
    names = set(config) | set(secret) | pod_env_names(pod)
    assert not unknown_vars(names)
    assert not set(config) & {"LIVECORE_SECRET", "LIVECORE_DATABASE_URL", "LIVECORE_REDIS_URL"}, \
        "secrets and URLs with passwords belong in the Secret"
    settings = settings_from({**config, **secret, "LIVECORE_NODE_ID": "pod-0"}, monkeypatch)
    assert settings.host == "0.0.0.0"
    envfrom = {ref.get("configMapRef", ref.get("secretRef", {})).get("name")
               for c in pod["containers"] for ref in c.get("envFrom", [])}
    assert envfrom == {"livecore-config", "livecore-secrets"}
    job = one("Job", "livecore-migrate")["spec"]["template"]["spec"]
    assert not unknown_vars(pod_env_names(job))
    assert job["containers"][0]["args"] == ["migrate"]


def test_k8s_probes_and_graceful_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    config = one("ConfigMap", "livecore-config")["data"]
    drain_s = settings_from(config, monkeypatch).drain_s
    pod = one("Deployment", "livecore-gateway")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port = container["ports"][0]
    assert port["containerPort"] == int(config["LIVECORE_PORT"]) and port["name"] == "http"
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    grace = pod["terminationGracePeriodSeconds"]
    # preStop, then SIGTERM and up to drain_s of draining, then a few seconds to exit.
    assert pre_stop + drain_s + 2 <= grace <= pre_stop + drain_s + 15, (pre_stop, drain_s, grace)
    sc = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] and not sc["allowPrivilegeEscalation"]


def test_k8s_objects_point_at_each_other() -> None:
    deployment = one("Deployment", "livecore-gateway")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = one("Service", "livecore-gateway")
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["name"] for p in service["spec"]["ports"]} == {"http"}
    assert one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "livecore-gateway"}
    assert hpa["spec"]["minReplicas"] >= 2
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert one("Job")["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert image in {i["name"] for i in one("Kustomization")["images"]}
    ingresses = [o for o in k8s_objects() if o["kind"] == "Ingress"]
    for ing in ingresses:
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"] == {"name": "livecore-gateway", "port": {"name": "http"}}
    main = one("Ingress", "livecore")
    ann = main["metadata"]["annotations"]
    # WebSockets live for the whole show: the proxy must not cut idle-looking ones.
    assert int(ann["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(ann["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    assert "timeout" not in ann["nginx.ingress.kubernetes.io/proxy-next-upstream"].split()
    video = one("Ingress", "livecore-video")
    assert video["metadata"]["annotations"]["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$video_show"


# ---- Dockerfile ------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_non_root_with_healthcheck() -> None:
    lines = [ln.strip() for ln in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines()]
    instructions = [ln.split()[0].upper() for ln in lines if ln and not ln.startswith("#")
                    and ln.split()[0].isupper()]
    assert instructions.count("FROM") >= 2
    runtime = lines[max(i for i, ln in enumerate(lines) if ln.startswith("FROM ")):]
    user = [ln.split()[1] for ln in runtime if ln.startswith("USER ")]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert any(ln.startswith("HEALTHCHECK ") for ln in runtime) and "/healthz" in " ".join(runtime)
    assert 'ENTRYPOINT ["livecore"]' in runtime and 'CMD ["serve"]' in runtime
    assert "EXPOSE 8000" in runtime
    assert any("COPY --from=build" in ln for ln in runtime)
    # The healthcheck is exec-form JSON running Python code: both must parse.
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    (health,) = [ln for ln in text.splitlines() if ln.startswith("HEALTHCHECK ")]
    argv = json.loads(health.split(" CMD ", 1)[1])
    assert argv[:2] == ["python", "-c"]
    compile(argv[2], "HEALTHCHECK", "exec")
    for service in compose()["services"].values():
        test = service.get("healthcheck", {}).get("test", [])
        if test[:3] == ["CMD", "python", "-c"]:
            compile(test[3], "compose healthcheck", "exec")
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    assert {"**", "!livecore/", "!gateway/", "!pyproject.toml"} <= set(ignore)


# ---- Grafana ---------------------------------------------------------------------------


def metrics_of(module: ModuleType) -> dict[str, str]:
    """The Prometheus metrics a module defines: family name -> type."""
    return {v._name: str(v._type) for v in vars(module).values() if isinstance(v, MetricWrapperBase)}


def metric_families() -> tuple[dict[str, str], dict[str, str]]:
    """(the metrics of livecore/metrics.py, every metric a dashboard may query:
    those, the ones other livecore modules define, and the process collector's)."""
    everything = {m.name: m.type for m in REGISTRY.collect() if m.name.startswith("process_")}
    for info in pkgutil.iter_modules(livecore.__path__, "livecore."):
        everything |= metrics_of(importlib.import_module(info.name))
    return metrics_of(livecore_metrics), everything


def sample_names(name: str, type_: str) -> set[str]:
    return {"counter": {f"{name}_total"}, "histogram": {f"{name}_bucket", f"{name}_sum", f"{name}_count"},
            "gauge": {name}}.get(type_, {name})


def test_dashboard_shows_our_metrics() -> None:
    dash = json.loads((DEPLOY / "grafana-dashboard.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs
    used = {m for e in exprs for m in re.findall(r"\b((?:livecore|process)_[a-z_]+)\b", e)}
    ours, everything = metric_families()
    known = {s for name, type_ in everything.items() for s in sample_names(name, type_)}
    assert used <= known, f"dashboard queries unknown metrics: {sorted(used - known)}"
    missing = [n for n, t in ours.items() if not sample_names(n, t) & used]
    assert not missing, f"metrics with no panel in deploy/grafana-dashboard.json: {missing}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for e in exprs:
        assert e.count("(") == e.count(")") and e.count("{") == e.count("}"), e
        if "livecore_" in e:
            assert 'instance=~"$instance"' in e, e


def test_deploy_docs_exist() -> None:
    for name in ("configuration.md", "deploy.md", "scaling.md"):
        assert (ROOT / "docs" / name).is_file(), name
