"""How batches are shown: display names of statuses and operation types (English or Brazilian
Portuguese), a batch's summary, its results as CSV."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from consumer.adapters.queries import with_figures
from contracts import OperationResult

_STATUS = {
    "en": {
        "pending": "Pending",
        "processing": "Processing",
        "completed": "Completed",
        "partial": "Partially completed",
        "failed": "Failed",
        "rejected": "Rejected",
        "cancelled": "Cancelled",
    },
    "pt-BR": {
        "pending": "Pendente",
        "processing": "Processando",
        "completed": "Concluído",
        "partial": "Parcialmente concluído",
        "failed": "Falhou",
        "rejected": "Rejeitado",
        "cancelled": "Cancelado",
    },
}
_OPERATION_TYPE = {
    "en": {
        "order_update": "Order update",
        "professional_approval": "Professional approval",
        "service_update": "Service update",
        "user_update": "User update",
        "bulk_delete": "Bulk delete",
        "custom": "Custom",
    },
    "pt-BR": {
        "order_update": "Atualização de pedido",
        "professional_approval": "Aprovação de profissional",
        "service_update": "Atualização de serviço",
        "user_update": "Atualização de usuário",
        "bulk_delete": "Exclusão em massa",
        "custom": "Personalizada",
    },
}


def language(accept_language: str | None) -> str:
    """`pt-BR` when Portuguese is the caller's most preferred language, else `en`."""
    best, best_q = "en", -1.0
    for part in (accept_language or "").split(","):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        lang = tag.strip().lower()
        if q > best_q and (lang.startswith(("pt", "en")) or lang == "*"):
            best, best_q = ("pt-BR" if lang.startswith("pt") else "en"), q
    return best


def status_label(status: str, lang: str) -> str:
    return _STATUS[lang].get(status, status)


def operation_type_label(operation_type: str, lang: str) -> str:
    return _OPERATION_TYPE[lang].get(operation_type, operation_type)


def summarize(row: dict[str, Any], lang: str) -> dict[str, Any]:
    """A stored batch as the HTTP API shows it: its row, its figures and display labels."""
    return {
        **with_figures(row),
        "status_display": status_label(row["status"], lang),
        "operation_type_display": operation_type_label(row["operation_type"], lang),
    }


RESULT_COLUMNS = (
    "index",
    "resource_id",
    "outcome",
    "status",
    "error_code",
    "error_message",
    "data",  # the resource after the operation, as JSON
    "occurred_at",
)


def results_csv(results: list[OperationResult]) -> str:
    """A batch's results as CSV, one row per operation (the HTTP API's and the console's)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(RESULT_COLUMNS)
    for r in results:
        writer.writerow(
            [
                r.index,
                r.resource_id,
                r.outcome.value,
                r.status,
                r.error.code.value if r.error else "",
                r.error.message if r.error else "",
                json.dumps(r.data) if r.data is not None else "",
                r.occurred_at.isoformat(),
            ]
        )
    return out.getvalue()
