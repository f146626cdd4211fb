"""The IBM Telco customer-churn schema: column names and the categories each column may take.

Shared by the synthetic generator (which must produce exactly this schema) and the curated
validation suite (which checks it), so that the two cannot disagree.
"""

from __future__ import annotations

from churn.model.features import TELCO_ADDONS
from churn.normalise import snake_case

TARGET = "churn"
CUSTOMER_KEY = "customer_id"

# The raw column names, as the IBM file spells them, in file order.
RAW_COLUMNS: tuple[str, ...] = (
    "customerID",
    "gender",
    "SeniorCitizen",
    "Partner",
    "Dependents",
    "tenure",
    "PhoneService",
    "MultipleLines",
    "InternetService",
    "OnlineSecurity",
    "OnlineBackup",
    "DeviceProtection",
    "TechSupport",
    "StreamingTV",
    "StreamingMovies",
    "Contract",
    "PaperlessBilling",
    "PaymentMethod",
    "MonthlyCharges",
    "TotalCharges",
    "Churn",
)

# The model's inputs, normalised (snake_case), in file order: every column but the key and target.
FEATURES: tuple[str, ...] = tuple(
    snake_case(name) for name in RAW_COLUMNS if snake_case(name) not in (CUSTOMER_KEY, TARGET)
)

YES_NO = ("Yes", "No")
# The internet add-ons: the model package's Telco-aware features count them too.
INTERNET_ADDONS = TELCO_ADDONS

# Categories of every categorical column, keyed by the normalised (snake_case) name.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "gender": ("Female", "Male"),
    "partner": YES_NO,
    "dependents": YES_NO,
    "phone_service": YES_NO,
    "multiple_lines": ("Yes", "No", "No phone service"),
    "internet_service": ("DSL", "Fiber optic", "No"),
    **{addon: ("Yes", "No", "No internet service") for addon in INTERNET_ADDONS},
    "contract": ("Month-to-month", "One year", "Two year"),
    "paperless_billing": YES_NO,
    "payment_method": (
        "Electronic check",
        "Mailed check",
        "Bank transfer (automatic)",
        "Credit card (automatic)",
    ),
}

# Plausible ranges of the numeric columns (normalised names). Wider than the IBM file's observed
# ranges (tenure 0-72, monthly charges 18.25-118.75) so that a price rise or a drifted batch is
# reported by drift monitoring rather than rejected as corrupt.
NUMERIC_RANGES: dict[str, tuple[float, float]] = {
    "senior_citizen": (0, 1),
    "tenure": (0, 120),
    "monthly_charges": (0, 500),
    "total_charges": (0, 60_000),
}


def looks_like_telco(columns: list[str] | tuple[str, ...]) -> bool:
    """Whether normalised column names carry the Telco schema (every Telco column present)."""
    return {snake_case(name) for name in RAW_COLUMNS} <= set(columns)
