"""Feed lifecycle, the alarm scheduler and the webhook feed."""
