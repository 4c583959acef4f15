"""The numeric-ports annotation that on-demand injection writes."""

from __future__ import annotations

from kubepresence.manager.core.injection import parse_numeric_ports
from kubepresence.manager.k8s.workloads import numeric_ports_with


def test_numeric_port_is_added_once_and_keeps_the_others() -> None:
    assert numeric_ports_with("", None) == ""
    assert numeric_ports_with("", 8080) == "8080"
    assert numeric_ports_with("9000", 8080) == "9000,8080"
    assert numeric_ports_with("8080, 9000", 8080) == "8080,9000"
    assert parse_numeric_ports(numeric_ports_with("9000", 8080)) == [9000, 8080]
