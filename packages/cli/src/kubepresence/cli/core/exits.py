"""Exit codes: 0 success, and one code per error category so scripts can tell them apart."""

from __future__ import annotations

import enum

from kubepresence.protocol.errors import Category


class ExitCode(enum.IntEnum):
    OK = 0
    INTERNAL = 1  # a bug: the log file tells more
    USER = 2  # bad input (also click's code for usage errors)
    CONFIG = 3  # kubeconfig, machine setup
    CLUSTER = 4  # the cluster refused or cannot be reached, or its manager is too old


_BY_CATEGORY = {
    Category.USER: ExitCode.USER,
    Category.CONFIG: ExitCode.CONFIG,
    Category.CLUSTER: ExitCode.CLUSTER,
    Category.INTERNAL: ExitCode.INTERNAL,
}


def exit_code(category: Category) -> ExitCode:
    return _BY_CATEGORY[category]
