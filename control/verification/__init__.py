"""Face verification as the control plane uses it: references and live status (``api``), the
verifier's set-up and its binding to the cases' consent (``wiring``). The engines are the
top-level ``verifier`` package."""
