"""What the simulated company holds: the 22 entities, their operations, plausible fields."""

from __future__ import annotations

import random
from typing import Any, Final

from ..quickbooks.resources import RESOURCES

ENTITIES: Final = tuple(r.entity for r in RESOURCES)

# Every entity of Intuit's API reference that Query, CDC and read by id name. The sandbox holds
# objects of ENTITIES (and CompanyInfo) only; the rest answer as a company with none of them does:
# an empty Query, an empty CDC block, Object Not Found. A client that syncs everything names them.
API_ENTITIES: Final = (
    "Account",
    "Attachable",
    "Bill",
    "BillPayment",
    "Budget",
    "Class",
    "CompanyCurrency",
    "CompanyInfo",
    "CreditCardPayment",
    "CreditMemo",
    "Customer",
    "CustomerType",
    "Department",
    "Deposit",
    "Employee",
    "Entitlements",
    "Estimate",
    "ExchangeRate",
    "Invoice",
    "Item",
    "JournalCode",
    "JournalEntry",
    "Payment",
    "PaymentMethod",
    "Preferences",
    "Purchase",
    "PurchaseOrder",
    "RecurringTransaction",
    "RefundReceipt",
    "ReimburseCharge",
    "SalesReceipt",
    "TaxAgency",
    "TaxClassification",
    "TaxCode",
    "TaxPayment",
    "TaxRate",
    "Term",
    "TimeActivity",
    "Transfer",
    "Vendor",
    "VendorCredit",
)

# Name lists are never hard-deleted: QuickBooks sets Active=false.
NAME_LISTS: Final = frozenset(
    {
        "Customer",
        "Vendor",
        "Employee",
        "Account",
        "Class",
        "Item",
        "PaymentMethod",
        "Term",
        "CompanyCurrency",
        "TaxCode",
        "TaxRate",
    }
)
TRANSACTIONS: Final = frozenset(ENTITIES) - NAME_LISTS

CDC_REFUSED: Final = frozenset({"JournalCode", "TaxAgency", "TimeActivity", "TaxCode", "TaxRate"})
NO_WEBHOOKS: Final = frozenset({"TaxCode", "TaxRate"})
WEBHOOK_NAMES: Final = {"CompanyCurrency": "Currency"}

# From Intuit's webhook operation matrix. PaymentMethod, Term and CompanyCurrency have no Delete
# there, so the sandbox never deactivates them: a deactivation announced as Update would be an
# UPDATED webhook but a DELETED poll (Active=false) and the two could never agree.
_DELETABLE_LISTS: Final = frozenset({"Customer", "Vendor", "Employee", "Account", "Class", "Item"})
MERGEABLE: Final = _DELETABLE_LISTS
VOIDABLE: Final = frozenset(
    {"BillPayment", "CreditMemo", "Invoice", "Payment", "RefundReceipt", "SalesReceipt"}
)
EMAILABLE: Final = frozenset(
    {
        "CreditMemo",
        "Estimate",
        "Invoice",
        "Payment",
        "PurchaseOrder",
        "RefundReceipt",
        "SalesReceipt",
    }
)
OPERATIONS: Final = ("Create", "Update", "Delete", "Void", "Merge", "Emailed")


def operations(entity: str) -> tuple[str, ...]:
    """The operations the simulated company can apply to an entity."""
    if entity in ("TaxCode", "TaxRate"):
        return ("Create", "Update")
    allowed = ["Create", "Update"]
    if entity in TRANSACTIONS or entity in _DELETABLE_LISTS:
        allowed.append("Delete")
    if entity in VOIDABLE:
        allowed.append("Void")
    if entity in MERGEABLE:
        allowed.append("Merge")
    if entity in EMAILABLE:
        allowed.append("Emailed")
    return tuple(allowed)


_FIRST = ("Amy", "Bill", "Cathy", "Dylan", "Geeta", "Jeff", "Kookies", "Mark", "Rondonuwu", "Sushi")
_LAST = ("Bird", "Cho", "Fruit", "Lawn", "Pye", "Sanchez", "Tyler", "Young", "Wu", "Zanotti")
_CURRENCIES = (
    ("EUR", "Euro"),
    ("GBP", "British Pound Sterling"),
    ("CAD", "Canadian Dollar"),
    ("AUD", "Australian Dollar"),
    ("JPY", "Japanese Yen"),
    ("INR", "Indian Rupee"),
    ("MXN", "Mexican Peso"),
    ("CHF", "Swiss Franc"),
    ("SEK", "Swedish Krona"),
    ("NZD", "New Zealand Dollar"),
)


def _ref(value: int, name: str) -> dict[str, str]:
    return {"value": str(value), "name": name}


def _person(n: int) -> str:
    return f"{_FIRST[n % len(_FIRST)]} {_LAST[(n // len(_FIRST)) % len(_LAST)]} {n}"


def fields(entity: str, n: int, rng: random.Random) -> dict[str, Any]:
    """The entity-specific fields of the n-th object (Id, SyncToken and MetaData come elsewhere)."""
    amount = round(rng.uniform(10, 5000), 2)
    date = f"2026-{1 + n % 12:02d}-{1 + n % 28:02d}"
    customer = _ref(1 + n % 5, _person(1 + n % 5))
    vendor = _ref(1 + n % 5, f"Vendor {1 + n % 5}")
    match entity:
        case "Customer" | "Vendor" | "Employee":
            name = _person(n) if entity != "Vendor" else f"Vendor {n}"
            given, family = name.split(" ", 1)
            obj: dict[str, Any] = {
                "DisplayName": name,
                "GivenName": given,
                "FamilyName": family,
                "PrintOnCheckName": name,
            }
            if entity != "Employee":
                obj["CompanyName"] = f"{name} Ltd"
                obj["Balance"] = 0
            if entity == "Customer":
                obj["Job"] = False
                obj["PrimaryEmailAddr"] = {"Address": f"customer{n}@example.com"}
            return obj
        case "Account":
            return {
                "Name": f"Account {n}",
                "FullyQualifiedName": f"Account {n}",
                "AccountType": "Income",
                "AccountSubType": "SalesOfProductIncome",
                "Classification": "Revenue",
                "CurrentBalance": 0,
            }
        case "Class":
            return {"Name": f"Class {n}", "FullyQualifiedName": f"Class {n}", "SubClass": False}
        case "Item":
            return {
                "Name": f"Product {n}",
                "FullyQualifiedName": f"Product {n}",
                "Type": "Service",
                "UnitPrice": amount,
                "IncomeAccountRef": _ref(1, "Account 1"),
            }
        case "PaymentMethod":
            return {"Name": f"Payment method {n}", "Type": "NON_CREDIT_CARD"}
        case "Term":
            return {"Name": f"Net {n * 5}", "Type": "STANDARD", "DueDays": n * 5}
        case "CompanyCurrency":
            code, name = _CURRENCIES[(n - 1) % len(_CURRENCIES)]
            if n > len(_CURRENCIES):
                code, name = f"{code[:2]}{n}", f"{name} {n}"
            return {"Code": code, "Name": name}
        case "TaxCode":
            return {
                "Name": f"Tax code {n}",
                "Description": f"Tax code {n}",
                "Taxable": True,
                "TaxGroup": False,
            }
        case "TaxRate":
            return {
                "Name": f"Tax rate {n}",
                "RateValue": round(rng.uniform(1, 20), 2),
                "AgencyRef": _ref(1, "Tax agency"),
            }
        case "TimeActivity":
            return {
                "TxnDate": date,
                "NameOf": "Employee",
                "EmployeeRef": _ref(1 + n % 5, _person(1 + n % 5)),
                "Hours": 1 + n % 8,
                "Minutes": 0,
                "Description": f"Work {n}",
            }
        case "JournalEntry":
            return {"DocNumber": f"JE{n}", "TxnDate": date, "TotalAmt": amount, "Adjustment": False}
        case "BillPayment":
            return {"TxnDate": date, "TotalAmt": amount, "PayType": "Check", "VendorRef": vendor}
        case "Payment":
            return {"TxnDate": date, "TotalAmt": amount, "UnappliedAmt": 0, "CustomerRef": customer}
        case "Bill" | "PurchaseOrder" | "VendorCredit":
            obj = {
                "DocNumber": f"{n:05d}",
                "TxnDate": date,
                "TotalAmt": amount,
                "VendorRef": vendor,
            }
            if entity == "Bill":
                obj["Balance"] = amount
            if entity == "PurchaseOrder":
                obj["POStatus"] = "Open"
            return obj
        case _:  # Invoice, CreditMemo, RefundReceipt, SalesReceipt
            balance = amount if entity in ("Invoice", "CreditMemo") else 0
            return {
                "DocNumber": f"{n:05d}",
                "TxnDate": date,
                "TotalAmt": amount,
                "Balance": balance,
                "CustomerRef": customer,
            }


def updated_fields(obj: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A visible edit: a new amount for a transaction, a note for a list entry."""
    if "TotalAmt" in obj:
        amount = round(rng.uniform(10, 5000), 2)
        changed: dict[str, Any] = {"TotalAmt": amount}
        if obj.get("Balance"):
            changed["Balance"] = amount
        return changed
    if "Hours" in obj:
        return {"Hours": 1 + rng.randrange(8)}
    return {"Notes": f"edited {rng.randrange(1_000_000)}"}


def voided_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """QuickBooks keeps a voided transaction with its amounts zeroed and a note saying so."""
    changed: dict[str, Any] = {"TotalAmt": 0, "PrivateNote": "Voided"}
    for key in ("Balance", "UnappliedAmt"):
        if key in obj:
            changed[key] = 0
    return changed


def emailed_fields(sent_at: str) -> dict[str, Any]:
    """Sending a transaction by email marks it sent and records the delivery."""
    return {
        "EmailStatus": "EmailSent",
        "DeliveryInfo": {"DeliveryType": "Email", "DeliveryTime": sent_at},
    }


def display_name_key(entity: str) -> str | None:
    """The unique name field a merged-away or deleted list entry gets ` (deleted)` appended to."""
    if entity in ("Customer", "Vendor", "Employee"):
        return "DisplayName"
    if entity in ("Account", "Class", "Item"):
        return "Name"
    return None
