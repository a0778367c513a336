#!/usr/bin/env bash
# Stops the mail test peer started by start.sh.
D=${MAILTEST_DIR:-/tmp/switchboard-mailtest}
postfix stop 2>/dev/null || true
doveadm -c "$D/dovecot.conf" stop 2>/dev/null || true
