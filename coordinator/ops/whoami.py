"""``GET /v1/whoami``: which principal a token is, so agents and scripts can check their token."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from coordinator import auth

blp = Blueprint("whoami", __name__, url_prefix="/v1",
                description="The caller's identity (any valid token)")


class WhoamiSchema(Schema):
    kind = fields.String(metadata={"description": "`admin`, `auditor` or `agent`"})
    system = fields.String(allow_none=True,
                           metadata={"description": "The agent's system; null otherwise"})


@blp.route("/whoami")
class Whoami(MethodView):
    @auth.require(*auth.ROLES)
    @blp.response(200, WhoamiSchema)
    def get(self):
        """Return the kind of the token and, for an agent, its system. Changes nothing."""
        principal = auth.current_principal()
        return {"kind": principal.kind, "system": principal.system}
