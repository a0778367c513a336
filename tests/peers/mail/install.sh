#!/usr/bin/env bash
# Installs the mail test peer (Debian): Postfix and Dovecot. Postfix is configured "Local
# only", so its default and relay transports are errors: it never sends mail off the machine.
# Idempotent: does nothing when both are installed.
set -euo pipefail
if command -v postfix >/dev/null && command -v dovecot >/dev/null && [ -e /usr/lib/dovecot/lmtp ]; then
    exit 0
fi
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
echo "postfix postfix/main_mailer_type select Local only" | as_root debconf-set-selections
echo "postfix postfix/mailname string test.local" | as_root debconf-set-selections
as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    postfix dovecot-imapd dovecot-lmtpd ssl-cert >/dev/null
