"""HTTP views of warnings: admins and auditors read them, admins acknowledge them."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from coordinator import auth
from coordinator.ops.redis_client import get_redis
from coordinator.warnings import store
from coordinator.warnings.schemas import WarningSchema, WarningsQuerySchema

blp = Blueprint("warnings", __name__, url_prefix="/v1/warnings",
                description="Warnings an admin must see (read: admin, auditor; ack: admin)")


@blp.route("")
class Warnings(MethodView):
    @auth.require(*auth.READERS)
    @blp.arguments(WarningsQuerySchema, location="query")
    @blp.response(200, WarningSchema(many=True))
    def get(self, query):
        """List warnings last seen at or after ``since`` (all without it), most recent first."""
        return store.list_warnings(get_redis(), query.get("since"))


@blp.route("/<path:warning_id>/ack")
class Ack(MethodView):
    @auth.require(auth.ADMIN)
    @blp.response(200, WarningSchema)
    def post(self, warning_id):
        """Acknowledge a warning; it is unacknowledged again if the problem recurs."""
        return store.ack(get_redis(), warning_id)
