"""The shipped alert rules (``assets/prometheus/alerts.yml``) are valid Prometheus rules (``promtool check rules``),
each fires on the series that should fire it and stays quiet on those that should not (``promtool test rules`` on
``alerts.test.yml``), a wrong threshold breaks its case, and every alert links to its section of docs/alerts.md.
Debian's ``prometheus`` package brings promtool (scripts/setup.sh --dev installs it). No processes but promtool."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bench.harness.processes import REPO

RULES_DIR = REPO / "assets" / "prometheus"
RULES, CASES, RUNBOOK = RULES_DIR / "alerts.yml", RULES_DIR / "alerts.test.yml", REPO / "docs" / "alerts.md"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is missing: apt-get install prometheus "
                                    "(scripts/setup.sh --dev does it)")

WRONG_THRESHOLDS = {
    "PortraitCapacityBelowConfigured": ("for: 10m", "for: 15m"),
    "PortraitNoWorkerReady": ("== 0", "< 0"),
    "PortraitPartCrashLooping": ("== 1", "== 2"),
    "PortraitOutOfMemoryRestarts": ("> 2", "> 5"),
    "PortraitHungWorkerReplaced": ("[30m]", "[1m]"),
    "PortraitQueueWaitHigh": ("> 120", "> 300"),
    "PortraitJobFailureRatioHigh": ("> 0.1)", "> 0.05)"),
    "PortraitWebhookBacklog": ("> 600", "> 1800"),
    "PortraitCallsLostInFailover": ("[30m]", "[1m]"),
    "PortraitFloatingAddressNoHolder": ("== 0", "< 0"),
    "PortraitFloatingAddressTwoHolders": ("> 1", "> 0"),
    "PortraitCertificateExpiring": ("14 * 86400", "7 * 86400"),
    "PortraitStoreDiskFilling": ("< 0.1", "< 0.01"),
    "PortraitGpuHot": ("> 87", "> 95"),
    "PortraitGpuXidError": ("xid_errors_total[10m]", "xid_errors_total[1m]"),
    "PortraitTargetDown": ("for: 2m", "for: 5m"),
}
"""Per alert, one edit of its rule (a threshold, a window or a ``for``) that its promtool case must catch."""


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def promtool(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL or "promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


@needs_promtool
def test_each_alert_fires_and_stays_quiet_as_its_cases_say() -> None:
    tested = promtool("test", "rules", CASES.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_firing_and_a_quiet_case_and_a_runbook_section() -> None:
    cases = yaml.safe_load(CASES.read_text())["tests"]
    firing = {check["alertname"] for case in cases for check in case["alert_rule_test"] if check["exp_alerts"]}
    anchors = {heading.strip().lower() for heading in re.findall(r"^### (\w+)$", RUNBOOK.read_text(), re.M)}
    names = [rule["alert"] for rule in rules()]
    assert set(names) == set(WRONG_THRESHOLDS) == firing
    for rule in rules():
        assert rule["annotations"]["runbook_url"] == f"docs/alerts.md#{rule['alert'].lower()}"
        assert rule["alert"].lower() in anchors, f"docs/alerts.md has no section ### {rule['alert']}"


@needs_promtool
@pytest.mark.parametrize("alert", sorted(WRONG_THRESHOLDS))
def test_a_wrong_threshold_fails_its_case(alert: str, tmp_path: Path) -> None:
    right, wrong = WRONG_THRESHOLDS[alert]
    document = yaml.safe_load(RULES.read_text())
    rule = next(rule for group in document["groups"] for rule in group["rules"] if rule.get("alert") == alert)
    text = yaml.safe_dump(rule)
    assert text.count(right) == 1, f"{alert}: {right!r} is not once in its rule"
    rule.clear()
    rule.update(yaml.safe_load(text.replace(right, wrong)))
    (tmp_path / RULES.name).write_text(yaml.safe_dump(document))
    shutil.copy(CASES, tmp_path / CASES.name)
    tested = promtool("test", "rules", CASES.name, cwd=tmp_path)
    assert tested.returncode != 0, f"{alert} with {wrong!r} instead of {right!r} still passed its cases"
    assert f"alertname: {alert}," in tested.stdout + tested.stderr
