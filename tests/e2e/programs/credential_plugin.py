"""A kubeconfig exec credential plugin for test_credentials (written out with a shebang of
the test's python): each call mints a token bound to a fresh Secret kp-cred-<n> and
deletes the previous call's Secret, which revokes the token bound to it.

Environment: KUBECTL, ADMIN (the admin kubeconfig), NS, ACCOUNT (the service account),
CALLS (a file: one line "<n> <expiry>" per call), LIFETIME (seconds each token is said to
live). Prints the ExecCredential.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time


def main() -> None:
    kubectl = [os.environ["KUBECTL"], "--kubeconfig", os.environ["ADMIN"], "-n", os.environ["NS"]]
    calls = pathlib.Path(os.environ["CALLS"])
    n = len(calls.read_text().splitlines()) + 1 if calls.exists() else 1
    secret = f"kp-cred-{n}"
    subprocess.run(
        [*kubectl, "create", "secret", "generic", secret],
        check=True,
        capture_output=True,
        timeout=30,
    )
    token = subprocess.run(
        [
            *kubectl,
            "create",
            "token",
            os.environ["ACCOUNT"],
            "--duration=10m",
            "--bound-object-kind=Secret",
            f"--bound-object-name={secret}",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    if n > 1:  # revokes the token bound to it
        subprocess.run(
            [*kubectl, "delete", "secret", f"kp-cred-{n - 1}", "--wait=false"],
            check=True,
            capture_output=True,
            timeout=30,
        )
    expires = time.time() + float(os.environ["LIFETIME"])
    with calls.open("a") as f:
        f.write(f"{n} {expires}\n")
    print(
        json.dumps(
            {
                "apiVersion": "client.authentication.k8s.io/v1",
                "kind": "ExecCredential",
                "status": {
                    "token": token,
                    "expirationTimestamp": time.strftime(
                        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)
                    ),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
