"""The feedback loop: what the API served (the impression log), what users clicked, the two joined
into labeled impressions and training clicks, and the online click rates. Dagster-free."""
