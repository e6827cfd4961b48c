"""monitoring/: Prometheus config and alert rules (promtool), Grafana provisioning and dashboards.

promtool comes from Debian's ``prometheus`` package (``.ci/run`` installs it). Without it these tests skip
on a laptop and fail under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
DASHBOARDS = MONITORING / "grafana" / "dashboards"
PROVISIONING = MONITORING / "grafana" / "provisioning"
EXPECTED_UIDS = {"ai-trader-trading", "ai-trader-ai", "ai-trader-bot-health", "ai-trader-api"}
SPEC_METRICS = (
    "http_requests_total",
    "http_request_duration_seconds",
    "trades_total",
    "trade_volume_krw_total",
    "trade_fee_krw_total",
    "ai_decisions_total",
    "ai_confidence",
    "portfolio_value_krw",
    "portfolio_profit_rate",
    "bot_running",
    "bot_errors_total",
    "scheduler_job_duration_seconds",
    "scheduler_job_success_total",
    "scheduler_job_failure_total",
    "trading_cycle_stage_duration_seconds",
    "exchange_request_errors_total",
    "ai_request_errors_total",
    "ai_tokens_total",  # issue 11: AI cost counted and capped
    "ai_cost_usd_total",
    "ai_budget_remaining_usd",
    "ai_budget_limit_usd",
)
# What Grafana substitutes before a query reaches Prometheus; tests use the same short values.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$mode": "paper",
    "$instance": ".*",  # "All"
    "$symbol": ".*",
}
# The dashboard variables as Grafana renders them into SQL (``${name:regex}``).
SQL_VARIABLES = {"${mode:regex}": "paper", "${instance:regex}": ".*", "${symbol:regex}": ".*"}
TRADING_DASHBOARDS = ("trading.json", "ai.json", "bot-health.json")  # api.json shows HTTP metrics only


def require_tool(name: str) -> str:
    """The path of a command-line tool; skip without it on a laptop, fail without it under CI=true."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (Debian: apt-get install -y prometheus docker-compose)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true requires it")
        pytest.skip(reason)
    return path


def _run(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=60)


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panel_targets(dashboard: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(panel, target) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def promql_expressions() -> list[tuple[str, str]]:
    """(where, expression) of every Prometheus query in the dashboards, with Grafana's variables substituted."""
    found = []
    for name, dashboard in dashboards().items():
        for panel, target in panel_targets(dashboard):
            if target["datasource"]["uid"] == "prometheus":
                expr = target["expr"]
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                found.append((f"{name}: {panel['title']} [{target['refId']}]", expr))
    return found


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus.local.yml"])
def test_prometheus_config_is_valid(name: str) -> None:
    promtool = require_tool("promtool")
    result = _run(promtool, "check", "config", name)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((MONITORING / name).read_text())
    assert {job["job_name"] for job in config["scrape_configs"]} >= {"api", "scheduler"}
    assert config["rule_files"] == ["alerts.yml"]


def test_alert_rules_are_valid_and_cover_the_required_conditions() -> None:
    promtool = require_tool("promtool")
    result = _run(promtool, "check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert names >= {
        "SchedulerDown",
        "SchedulerHeartbeatStale",
        "SchedulerJobFailures",
        "BotErrorRateHigh",
        "SafeModeActive",
        "DrawdownBeyondThreshold",
        "ApiHigh5xxRate",
    }


def test_alert_rule_unit_tests_pass() -> None:
    promtool = require_tool("promtool")
    result = _run(promtool, "test", "rules", "tests/alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    tests = yaml.safe_load((MONITORING / "tests" / "alerts_test.yml").read_text())
    tested = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert {rule["alert"] for group in rules["groups"] for rule in group["rules"]} <= tested


def test_dashboards_are_valid_with_stable_unique_uids() -> None:
    # Given the provisioned dashboards
    found = dashboards()
    # Then each is a dashboard model with a stable uid, unique panel ids and a layout
    assert {dashboard["uid"] for dashboard in found.values()} == EXPECTED_UIDS
    for name, dashboard in found.items():
        assert dashboard["title"], name
        assert dashboard["schemaVersion"] >= 36, name
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in dashboard["panels"]:
            assert set(panel["gridPos"]) == {"x", "y", "w", "h"}, f"{name}: {panel['title']}"
            assert panel["targets"], f"{name}: {panel['title']} has no query"


def test_dashboards_only_use_provisioned_datasources() -> None:
    provisioned = yaml.safe_load((PROVISIONING / "datasources" / "datasources.yml").read_text())
    uids = {source["uid"]: source["type"] for source in provisioned["datasources"]}
    assert uids == {"prometheus": "prometheus", "postgres": "grafana-postgresql-datasource"}
    for name, dashboard in dashboards().items():
        for panel, target in panel_targets(dashboard):
            source = target["datasource"]
            assert uids.get(source["uid"]) == source["type"], f"{name}: {panel['title']}"
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "dashboards.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    # Given every PromQL expression of the dashboards as a recording rule, When promtool checks them, Then all parse
    promtool = require_tool("promtool")
    expressions = promql_expressions()
    rules = [{"record": f"dashboard:query_{index}", "expr": expr} for index, (_, expr) in enumerate(expressions)]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = _run(promtool, "check", "rules", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_trading_dashboards_never_add_modes_instances_or_symbols_together() -> None:
    # Given the dashboards that show trading data
    for name in TRADING_DASHBOARDS:
        dashboard = dashboards()[name]
        # Then each has the mode (one at a time), instance and symbol variables
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert set(variables) == {"mode", "instance", "symbol"}, name
        assert variables["mode"]["multi"] is False
        assert variables["mode"]["includeAll"] is False
        # And every query of a metric or table that has a mode, instance or symbol filters by it
        for panel, target in panel_targets(dashboard):
            query = target.get("expr") or target["rawSql"]
            where = f"{name}: {panel['title']}"
            if re.search(r"\b(trades_total|trade_volume_krw_total|trade_fee_krw_total)\{", query):
                assert 'symbol=~"$symbol"' in query, where
            if re.search(r'(portfolio_value_krw|portfolio_profit_rate|trades_total)\{job="api"', query):
                assert 'mode=~"$mode"' in query, where
            if 'job="scheduler"' in query and not query.startswith("max(up{"):
                assert 'bot_instance=~"$instance"' in query, where
            if re.search(r"FROM (trades|positions)\b", query):
                assert "${mode:regex}" in query, where
                assert "${symbol:regex}" in query, where


def test_every_spec_metric_is_on_a_dashboard_or_alert() -> None:
    text = " ".join(expr for _, expr in promql_expressions()) + (MONITORING / "alerts.yml").read_text()
    for metric in SPEC_METRICS:
        assert re.search(rf"\b{metric}(_bucket|_count|_sum)?\b", text), f"{metric} is not shown anywhere"


def _sql_queries() -> list[tuple[str, str]]:
    found = []
    for name, dashboard in dashboards().items():
        for panel, target in panel_targets(dashboard):
            if target["datasource"]["uid"] == "postgres":
                raw = re.sub(r"\$__timeFilter\((\w+)\)", r"\1 > now() - interval '1 day'", target["rawSql"])
                for variable, value in SQL_VARIABLES.items():
                    raw = raw.replace(variable, value)
                found.append((f"{name}: {panel['title']}", raw))
    return found


@pytest.mark.postgres
async def test_dashboard_sql_runs_on_the_migrated_schema(postgres_url: str) -> None:
    # Given the migrated PostgreSQL schema, When each SQL panel's query runs, Then PostgreSQL accepts it
    queries = _sql_queries()
    assert queries
    dsn = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        for where, sql in queries:
            try:
                await connection.fetch(sql)
            except asyncpg.PostgresError as exc:
                pytest.fail(f"{where}: {exc}")
    finally:
        await connection.close()
