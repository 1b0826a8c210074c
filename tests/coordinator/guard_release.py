"""Make numbering data with the release before the numbering guard (commit 0523a88), for the
upgrade test of ``test_numbering_guard_upgrade.py``.

Run in a subprocess whose ``PYTHONPATH`` is a checkout of that release, so ``coordinator``
below is the *old* code:

    python guard_release.py <redis url> <output json>

Three series as an installation of that release may hold them: ``default`` issued numbers,
``eu`` was set by an admin (next_number 100) and issued none, ``us`` was only created. Writes
every answer and the tokens to the output file. Not collected by pytest.
"""

from __future__ import annotations

import json
import sys


def main(url: str, output: str) -> None:
    from legacy_release import session  # next to this file: sys.path[0]

    _client, admin, done, call = session(url)
    done["tokens"] = {"admin": done["admin_token"]}

    def ok(method: str, path: str, headers: dict, body: dict | None = None) -> dict:
        answer = call(method, path, headers, body)
        assert answer["status"] < 300, answer
        return answer

    for name in ("eu", "us"):
        ok("post", "/v1/series", admin, {"name": name, "description": name.upper()})
    for system, series in (("blue", None), ("green", "eu"), ("white", "us")):
        fields = {"name": system, "url": "http://127.0.0.1:9/includes/api.php",
                  "api_identifier": "ident", "api_secret": "secret", "auto_sync": False}
        if series:
            fields["series"] = series
        created = ok("post", "/v1/systems", admin, fields)
        done["tokens"][system] = created["json"]["agent_token"]
    blue = {"Authorization": f"Bearer {done['tokens']['blue']}"}
    for ref in ("a1", "a2", "a3"):
        ok("post", "/v1/allocations", blue,
           {"document": "invoice", "reference": ref, "date": "2026-03-01"})
    ok("post", "/v1/allocations", blue,
       {"document": "credit_note", "reference": "c1", "date": "2026-03-03"})
    ok("patch", "/v1/series/eu/sequences/invoice", admin, {"next_number": 100})
    with open(output, "w") as handle:
        json.dump(done, handle, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
