"""Renders the fjord chart for each values file in this directory (no
cluster, no helm binary: helm-python-sdk embeds Helm's Go SDK), validates
every manifest against the Kubernetes 1.33 schemas (kubernetes-validate
--strict), runs checkov's Kubernetes checks on them, and checks that
values.schema.json rejects ci/bad-values.yaml. Every checkov finding left
must be listed, with its reason, in the chart's README ("Policy checks").

Usage: python check_chart.py OUT_DIR
"""

import json
import pathlib
import re
import subprocess
import sys

import helm_python as helm
import yaml

CHART = pathlib.Path(__file__).resolve().parent.parent
CASES = ["default", "five-replicas", "three-pools"]
KUBE = "1.33.0"
# Custom resources kubernetes-validate has no schema for: checked here for
# the fields their operators require.
CUSTOM = {
    ("cert-manager.io/v1", "Certificate"): ["secretName", "issuerRef", "uris"],
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ["selector", "endpoints"],
    ("monitoring.coreos.com/v1", "PrometheusRule"): ["groups"],
}


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def documented_findings():
    """(check id, resource kind) pairs the README explains."""
    text = (CHART / "README.md").read_text()
    section = text.split("## Policy checks", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (CKV2?_K8S_\d+) \| ([A-Za-z, ]+) \|", section, re.M)
    out = set()
    for check, kinds in rows:
        for kind in kinds.split(","):
            out.add((check, kind.strip()))
    return out


def main(out_dir):
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lint = helm.lint(str(CHART), strict=True, kube_version="v" + KUBE)
    errors = [m for m in lint.get("messages", []) if m.get("severity", 0) >= 2]
    if lint.get("errors") or errors:
        fail(f"helm lint: {lint}")
    chart = helm.Chart.load(str(CHART))

    bad = yaml.safe_load((CHART / "ci" / "bad-values.yaml").read_text())
    try:
        chart.validate_schema(bad)
        fail("values.schema.json accepted ci/bad-values.yaml")
    except helm.HelmValuesError as e:
        message = str(e)
        for must in ["replicas", "region", "capacity", "unknownKey"]:
            if must not in message:
                fail(f"the schema error does not name {must}: {message}")
        print(f"bad values rejected: {message.splitlines()[0]} ...")

    documented = documented_findings()
    summary = {}
    for case in CASES:
        values = yaml.safe_load((CHART / "ci" / f"{case}.yaml").read_text()) or {}
        chart.validate_schema(values)
        rendered = chart.render(values, name="fjord", namespace="fjord", is_install=True)
        case_dir = out_dir / case
        case_dir.mkdir(exist_ok=True)
        kinds = {}
        standard = []
        for path, text in sorted(rendered.items()):
            for doc in yaml.safe_load_all(text):
                if not doc:
                    continue
                kinds[doc["kind"]] = kinds.get(doc["kind"], 0) + 1
                key = (doc["apiVersion"], doc["kind"])
                if key in CUSTOM:
                    for field in CUSTOM[key]:
                        if field not in doc.get("spec", {}):
                            fail(f"{case}: {doc['kind']} {doc['metadata']['name']} has no spec.{field}")
                    continue
                name = f"{doc['kind']}-{doc['metadata']['name']}.yaml"
                (case_dir / name).write_text(yaml.safe_dump(doc))
                standard.append(str(case_dir / name))
        r = subprocess.run(
            ["kubernetes-validate", "-k", KUBE, "--strict", "--quiet", *standard],
            capture_output=True, text=True,
        )
        if r.returncode != 0:
            fail(f"{case}: kubernetes-validate:\n{r.stdout}\n{r.stderr}")
        r = subprocess.run(
            ["checkov", "-d", str(case_dir), "--framework", "kubernetes",
             "--skip-download", "--compact", "--quiet", "-o", "json"],
            capture_output=True, text=True,
        )
        try:
            report = json.loads(r.stdout)
        except json.JSONDecodeError:
            fail(f"{case}: checkov printed no JSON:\n{r.stdout[:2000]}\n{r.stderr[:2000]}")
        reports = report if isinstance(report, list) else [report]
        findings = set()
        checked = sum(
            rep.get("summary", {}).get("passed", 0) + rep.get("summary", {}).get("failed", 0)
            for rep in reports
        )
        # checkov skips what it cannot see (hidden directories, say):
        # nothing checked is a failure, not a pass.
        if checked < 50:
            fail(f"{case}: checkov checked only {checked} things in {case_dir}")
        for rep in reports:
            for f in rep.get("results", {}).get("failed_checks", []):
                kind = f["resource"].split(".")[0]
                findings.add((f["check_id"], kind))
        unexplained = sorted(findings - documented)
        if unexplained:
            fail(f"{case}: checkov findings the README does not explain: {unexplained}")
        summary[case] = {
            "kinds": kinds,
            "validated": len(standard),
            "checkov_checks": checked,
            "checkov_findings": sorted(findings),
        }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "target/chart-check")
