"""flowvoice: real-time AI voice chat where the whole agent is a YAML graph."""

__version__ = "0.1.0"
