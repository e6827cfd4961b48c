"""A/B: the instances of ``INSTANCES_FILE`` side by side, each read from its own database."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from backend.app.api.deps import Reader, SettingsDep
from backend.app.core.instances import load_instances
from backend.app.schemas.instances import InstanceOut, InstancesOut
from backend.app.services.instance_report import instance_reports
from src.domain.modes import TradingMode
from src.exceptions import ConfigurationError

router = APIRouter(prefix="/instances", tags=["instances"])


@router.get(
    "",
    response_model=InstancesOut,
    summary="A/B: every instance's strategy, equity, return, drawdown and trades (INSTANCES_FILE)",
)
async def list_instances(settings: SettingsDep, _: Reader, mode: Literal["paper", "replay"] = "paper") -> InstancesOut:
    path = settings.scheduler.instances_file
    if path is None:
        return InstancesOut(file=None, error=None, instances=[])
    try:
        file = load_instances(path, settings)
    except ConfigurationError as exc:
        return InstancesOut(file=str(path), error=exc.message, instances=[])
    reports = await instance_reports(file.instances, TradingMode(mode))
    return InstancesOut(
        file=str(path), error=None, instances=[InstanceOut.model_validate(report) for report in reports]
    )
