//! Alerts: rules with two severities, evaluation of run records, threshold recommendation and export.
