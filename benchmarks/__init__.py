"""Scripts that print figures: ratios and medians measured side by side in one run."""
