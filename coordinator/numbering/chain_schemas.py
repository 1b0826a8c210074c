"""Schemas of the ledger chain routes: verify's query and answer, export's query."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from coordinator.numbering.schemas import PERIOD, StrictSchema


class VerifyQuerySchema(StrictSchema):
    period = fields.String(load_default=None, validate=PERIOD, metadata={
        "description": "Count the events of this period as `entries` (the whole chain is "
                       "always verified)."})


class ExportQuerySchema(VerifyQuerySchema):
    format = fields.String(load_default="jsonl", validate=validate.OneOf(["jsonl", "csv"]))


class BadEventSchema(Schema):
    seq = fields.Integer(metadata={"description": "Index of the first event that fails."})
    checkpoint = fields.Integer(metadata={
        "description": "Or: index of the first signed checkpoint that fails."})
    id = fields.String(metadata={"description": "The allocation the event is about, if any."})
    reason = fields.String()


class VerifySchema(Schema):
    ok = fields.Boolean()
    series = fields.String()
    sequence = fields.String()
    period = fields.String(allow_none=True)
    events = fields.Integer(metadata={"description": "Events verified (before `first_bad`)."})
    entries = fields.Integer(metadata={"description": "Of those, the events of `period`."})
    head = fields.String(metadata={"description": "SHA-256 (hex) of the last verified event."})
    checkpoints = fields.Integer(metadata={
        "description": "Signed checkpoints checked (each: signature, and its head in the chain)."})
    unchained_numbers = fields.Integer(metadata={
        "description": "Numbers issued before the chain existed (upgraded data)."})
    first_bad = fields.Nested(BadEventSchema)


class ExportRecordSchema(Schema):
    """One line of a JSON lines export (the CSV has columns ``kind,seq,prev,hash,data``)."""

    kind = fields.String(metadata={
        "description": "header, event, checkpoint, entry, gap, audit or end"})
    seq = fields.Integer()
    prev = fields.String()
    hash = fields.String()
    event = fields.Dict()
    entry = fields.Dict()
    gap = fields.Dict()
    audit = fields.Dict()
    checkpoint = fields.Dict()


class CheckpointSchema(Schema):
    """A signed checkpoint (see docs/AUDITORS.md): everything but ``signature`` is signed."""

    format = fields.String()
    series = fields.String()
    sequence = fields.String()
    events = fields.Integer(metadata={"description": "How many events the head covers."})
    head = fields.String(metadata={"description": "SHA-256 (hex) of event `events - 1`."})
    at = fields.String()
    key_id = fields.String(metadata={
        "description": "First 16 hex digits of the SHA-256 of the raw Ed25519 public key."})
    signature = fields.String(metadata={"description": "Ed25519, url-safe base64."})
