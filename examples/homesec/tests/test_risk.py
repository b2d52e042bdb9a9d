"""Pure logic: risk levels and rule matching (no database needed)."""

import factories
import pytest
from homesec.errors import InvalidEventError
from homesec.models import AlertRule, RiskLevel
from homesec.services import risk_level_for, rule_matches


@pytest.mark.parametrize(
    ("score", "level"),
    [
        (0, RiskLevel.LOW),
        (15, RiskLevel.LOW),
        (29, RiskLevel.LOW),
        (30, RiskLevel.MEDIUM),
        (45, RiskLevel.MEDIUM),
        (59, RiskLevel.MEDIUM),
        (60, RiskLevel.HIGH),
        (72, RiskLevel.HIGH),
        (84, RiskLevel.HIGH),
        (85, RiskLevel.CRITICAL),
        (99, RiskLevel.CRITICAL),
        (100, RiskLevel.CRITICAL),
    ],
)
def test_risk_level_for_score(score, level):
    assert risk_level_for(score) is level


@pytest.mark.parametrize("score", [-1, -100, 101, 1000])
def test_scores_outside_the_scale_are_invalid(score):
    with pytest.raises(InvalidEventError, match="between 0 and 100"):
        risk_level_for(score)


@pytest.mark.parametrize(
    ("level", "threshold", "expected"),
    [
        (RiskLevel.LOW, RiskLevel.LOW, True),
        (RiskLevel.LOW, RiskLevel.MEDIUM, False),
        (RiskLevel.HIGH, RiskLevel.MEDIUM, True),
        (RiskLevel.HIGH, RiskLevel.CRITICAL, False),
        (RiskLevel.CRITICAL, RiskLevel.HIGH, True),
    ],
)
def test_risk_levels_are_ordered(level, threshold, expected):
    assert level.at_least(threshold) is expected


def _rule(**kwargs):
    defaults = {
        "name": "r",
        "enabled": True,
        "camera_id": None,
        "object_type": None,
        "min_confidence": 0.5,
        "min_risk_level": RiskLevel.HIGH,
    }
    return AlertRule(**(defaults | kwargs))


@pytest.mark.parametrize(
    ("rule_kwargs", "score", "detections", "fires"),
    [
        pytest.param({}, 60, (), True, id="high-risk-any-object"),
        pytest.param({}, 59, (), False, id="below-min-level"),
        pytest.param({"enabled": False}, 99, (), False, id="disabled"),
        pytest.param({"camera_id": "porch"}, 90, (), False, id="other-camera"),
        pytest.param({"camera_id": "yard"}, 90, (), True, id="same-camera"),
        pytest.param({"object_type": "person"}, 90, (("person", 0.8),), True, id="object-seen"),
        pytest.param({"object_type": "person"}, 90, (("car", 0.99),), False, id="object-absent"),
        pytest.param(
            {"object_type": "person", "min_confidence": 0.9},
            90,
            (("person", 0.6), ("person", 0.89)),
            False,
            id="object-not-confident",
        ),
        pytest.param(
            {"object_type": "person", "min_risk_level": RiskLevel.LOW},
            5,
            (("person", 0.95),),
            True,
            id="low-threshold",
        ),
    ],
)
def test_rule_matching(rule_kwargs, score, detections, fires):
    event = factories.event("yard", score, detections=detections)
    assert rule_matches(_rule(**rule_kwargs), event) is fires
