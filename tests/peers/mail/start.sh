#!/usr/bin/env bash
# Starts the mail test peer on loopback: Postfix takes mail on 127.0.0.1:2525 (an MX: no
# AUTH, as customers' mail arrives) and 127.0.0.1:2587 (submission: STARTTLS + AUTH, as the
# email channel sends), and delivers it over LMTP to Dovecot, which serves IMAP on
# 127.0.0.1:1143 (STARTTLS) and IMAPS on 127.0.0.1:1993. Self-signed certificate; no DNS; it
# never relays off the machine.
#
# Every address @test.local is a mailbox, with the password "testpw", so each test uses
# mailboxes of its own (support-<id>@test.local, customer-<id>@test.local) and tests never see
# each other's mail.
#
# Postfix stands in for a receiving server that checks DMARC: mail From an @test.local address
# gets "Authentication-Results: mail.test.local; dmarc=pass header.from=test.local", and such a
# header arriving from outside is removed (RFC 8601), as OpenDMARC would do.
#
# Idempotent: rewrites the configuration and (re)starts both servers. Run as root.
set -euo pipefail
D=${MAILTEST_DIR:-/tmp/switchboard-mailtest}
mkdir -p "$D/vmail" "$D/dovecot"
chown -R 5000:5000 "$D/vmail"
cat > "$D/dovecot.conf" <<CONF
base_dir = $D/dovecot
state_dir = $D/dovecot
log_path = $D/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = yes
ssl_cert = </etc/dovecot/private/dovecot.pem
ssl_key = </etc/dovecot/private/dovecot.key
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
mail_location = maildir:~/Maildir
first_valid_uid = 5000
mail_max_userip_connections = 1000
passdb {
  driver = static
  args = password=testpw
}
userdb {
  driver = static
  args = uid=5000 gid=5000 home=$D/vmail/%u allow_all_users=yes
}
namespace inbox {
  inbox = yes
  mailbox Sent {
    special_use = \Sent
    auto = subscribe
  }
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = 1143
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = 1993
    ssl = yes
  }
  process_min_avail = 2
}
service imap {
  process_limit = 1000
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = 24240
  }
}
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service auth {
  inet_listener auth-postfix {
    address = 127.0.0.1
    port = 12345
  }
}
CONF
if [ -e "$D/dovecot/master.pid" ] && kill -0 "$(cat "$D/dovecot/master.pid")" 2>/dev/null; then
    doveadm -c "$D/dovecot.conf" stop 2>/dev/null || true
    for _ in $(seq 50); do [ -e "$D/dovecot/master.pid" ] || break; sleep 0.1; done
fi
dovecot -c "$D/dovecot.conf" </dev/null >>"$D/dovecot-stderr.log" 2>&1

printf '/@test\\.local$/ OK\n' > /etc/postfix/switchboard_vmailbox
cat > /etc/postfix/switchboard_header_checks <<'CHECKS'
/^Authentication-Results:[[:space:]]*mail\.test\.local([[:space:];]|$)/ IGNORE
/^From:.*@test\.local>?[[:space:]]*$/ PREPEND Authentication-Results: mail.test.local; dmarc=pass header.from=test.local
CHECKS
postconf -e \
  'inet_interfaces = 127.0.0.1' 'inet_protocols = ipv4' \
  'myhostname = mail.test.local' 'mydestination = localhost' \
  'mynetworks = 127.0.0.0/8' \
  'smtp_dns_support_level = disabled' 'lmtp_dns_support_level = disabled' 'smtpd_peername_lookup = no' \
  'default_transport = error' 'relay_transport = error' \
  'virtual_mailbox_domains = test.local' 'virtual_mailbox_maps = regexp:/etc/postfix/switchboard_vmailbox' \
  'virtual_transport = lmtp:inet:127.0.0.1:24240' \
  'header_checks = regexp:/etc/postfix/switchboard_header_checks' \
  'lmtp_destination_concurrency_limit = 1' 'in_flow_delay = 0s' \
  'message_size_limit = 52428800' \
  'smtpd_tls_cert_file = /etc/dovecot/private/dovecot.pem' 'smtpd_tls_key_file = /etc/dovecot/private/dovecot.key' \
  'smtpd_sasl_type = dovecot' 'smtpd_sasl_path = inet:127.0.0.1:12345' \
  'maillog_file = /var/log/postfix.log'
# Port 25 replaced by 2525 (the MX side) and 2587 (submission, AUTH required).
postconf -MX smtp/inet 2>/dev/null || true
postconf -M '127.0.0.1:2525/inet=127.0.0.1:2525 inet n - n - - smtpd'
postconf -M '127.0.0.1:2587/inet=127.0.0.1:2587 inet n - n - - smtpd -o smtpd_tls_security_level=encrypt -o smtpd_sasl_auth_enable=yes -o smtpd_client_restrictions=permit_sasl_authenticated,reject -o smtpd_relay_restrictions=permit_sasl_authenticated,reject'
postconf -M 'postlog/unix-dgram=postlog unix-dgram n - n - 1 postlogd'
postfix check
if postfix status >/dev/null 2>&1; then postfix reload >/dev/null; else postfix start >/dev/null; fi
for _ in $(seq 100); do
    ss -ltn | grep -q '127.0.0.1:2525 ' && ss -ltn | grep -q '127.0.0.1:2587 ' \
        && ss -ltn | grep -q '127.0.0.1:1143 ' && ss -ltn | grep -q '127.0.0.1:1993 ' && break
    sleep 0.1
done
for port in 2525 2587 1143 1993; do
    ss -ltn | grep -q "127.0.0.1:$port " || { echo "mail peer: nothing listens on 127.0.0.1:$port" >&2; exit 1; }
done
echo "mail peer up: SMTP 127.0.0.1:2525, submission 127.0.0.1:2587, IMAP 127.0.0.1:1143, IMAPS 127.0.0.1:1993"
