"""AWS spot interruption warnings: the "EC2 Spot Instance Interruption Warning" events an SQS queue receives.

An EventBridge rule sends the events to the queue, directly or through an SNS topic
(which wraps each event in a notification); ``AwsCloud.interruption_warnings`` reads
the queue and turns each message body into an ``InterruptionWarning`` here.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

from placement.clouds.base import InterruptionWarning

logger = logging.getLogger("placement.clouds.aws")

#: AWS gives a spot instance two minutes between the warning and the interruption.
INTERRUPTION_NOTICE = timedelta(minutes=2)
INTERRUPTION_EVENT = "EC2 Spot Instance Interruption Warning"


def interruption_warning(body: str, region: str) -> InterruptionWarning | None:
    """The warning in an SQS message body: an EventBridge event, or one wrapped in an SNS notification."""
    try:
        event = json.loads(body)
        if isinstance(event, dict) and event.get("Type") == "Notification" and "Message" in event:
            event = json.loads(event["Message"])
    except (TypeError, ValueError):
        logger.warning("aws: ignored an unreadable interruption message: %.200s", body)
        return None
    if not isinstance(event, dict) or event.get("detail-type") != INTERRUPTION_EVENT:
        logger.info("aws: ignored a message that is not a spot interruption warning: %.200s", body)
        return None
    detail = event.get("detail") or {}
    instance_id = detail.get("instance-id") if isinstance(detail, dict) else None
    if not instance_id:
        logger.warning("aws: ignored an interruption warning without an instance id: %.200s", body)
        return None
    deadline = None
    try:
        deadline = datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00")).astimezone(UTC)
        deadline += INTERRUPTION_NOTICE
    except (KeyError, ValueError):
        logger.warning("aws: interruption warning for %s without a readable time", instance_id)
    return InterruptionWarning(
        instance_id=str(instance_id),
        region=str(event.get("region") or region),
        deadline=deadline,
        detail={str(key): str(value) for key, value in detail.items()},
    )
