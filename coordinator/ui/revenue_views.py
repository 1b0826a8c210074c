"""Revenue: by month, stacked by system, in the base currency; the forecast drawn apart;
receivables beside it; the same figures as a table under the chart and as CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

from flask import Response, current_app, render_template, request

from coordinator import clock
from coordinator.exceptions import InvalidInput
from coordinator.forecaster import reports
from coordinator.ops.redis_client import get_redis
from coordinator.systems import registry
from coordinator.ui.blueprint import bp

FORECAST_MONTHS = 6


def _today() -> dt.date:
    # FORECASTER_TODAY: tests pin the date, as for the reports API.
    return current_app.config.get("FORECASTER_TODAY") or clock.utcnow().date()


def revenue_by_system(start: str | None, end: str | None) -> dict[str, Any]:
    """Return the months, each system's gross per month, and the report over all systems.

    The total row comes from one report over every system (rounded once, like the API's), so
    it may differ by a cent from the sum of the per-system figures, which are rounded each.
    """
    client = get_redis()
    rates = reports.rates_of(registry.list_systems(client))
    base = current_app.config["BASE_CURRENCY"]
    start, end = start or None, end or None
    overall = reports.revenue(client, rates, base, start, end, "month", today=_today())
    series = []
    for rate in rates:
        one = reports.revenue(client, [rate], base, overall["from"], overall["to"], "month",
                              today=_today())
        series.append({"system": rate.name, "gross": [row["gross"] for row in one["rows"]]})
    return {"report": overall, "months": [row["key"] for row in overall["rows"]],
            "series": series}


@bp.get("/revenue")
def revenue():
    """Show the revenue chart and table, the forecast and the receivables."""
    client = get_redis()
    rates = reports.rates_of(registry.list_systems(client))
    base = current_app.config["BASE_CURRENCY"]
    start, end = request.args.get("from", ""), request.args.get("to", "")
    try:
        data = revenue_by_system(start, end)
    except InvalidInput as error:
        problems = [m for location in (error.errors or {}).values() for ms in location.values()
                    for m in ms]
        return render_template("revenue.html", error=" ".join(problems) or error.message,
                               start=start, end=end), 422
    forecast = reports.forecast(client, rates, base, FORECAST_MONTHS, today=_today())
    receivables = reports.receivables(client, rates, base, today=_today())
    chart = {"months": data["months"], "series": data["series"],
             "forecast": {"months": [r["month"] for r in forecast["rows"]],
                          "revenue": [r["revenue"] for r in forecast["rows"]]},
             "currency": base}
    return render_template("revenue.html", data=data, forecast=forecast,
                           receivables=receivables, chart=chart, start=start, end=end)


@bp.get("/revenue.csv")
def revenue_csv():
    """Download the table under the chart as CSV (one row per month)."""
    data = revenue_by_system(request.args.get("from", ""), request.args.get("to", ""))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    systems = [s["system"] for s in data["series"]]
    writer.writerow(["month", *[f"{name} gross" for name in systems], "invoices", "net", "tax",
                     "gross", "currency"])
    report = data["report"]
    for i, row in enumerate(report["rows"]):
        writer.writerow([row["key"], *[s["gross"][i] for s in data["series"]], row["invoices"],
                         row["net"], row["tax"], row["gross"], report["currency"]])
    total = report["total"]
    writer.writerow(["total", *[""] * len(systems), total["invoices"], total["net"], total["tax"],
                     total["gross"], report["currency"]])
    name = f"revenue-{report['from']}-{report['to']}.csv"
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
