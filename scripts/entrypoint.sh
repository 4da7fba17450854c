#!/bin/sh
# Container entrypoint: with no Twilio credentials, talk to the Twilio sandbox.
# The sandbox's credentials are public development values (sandbox/__init__.py).
set -eu
if [ -z "${TWILIO_ACCOUNT_SID:-}" ]; then
  export TWILIO_ACCOUNT_SID=AC5a4db0c0ffee5a4db0c0ffee5a4db0c0
  export TWILIO_AUTH_TOKEN=5a4db0c0ffee5a4db0c0ffee5a4db0c0
  export TWILIO_API_BASE="${TWILIO_API_BASE:-${SANDBOX_URL:-http://sandbox:8025}}"
fi
[ -n "${TWILIO_API_BASE:-}" ] || unset TWILIO_API_BASE
exec "$@"
