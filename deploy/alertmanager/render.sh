#!/bin/sh
# Render alertmanager.yml from its template with the settings of the environment, then run the
# command given as arguments (Alertmanager) with --config.file pointing at the rendered file.
#
#   ALERT_SMTP_SMARTHOST       SMTP server, host:port                    (default localhost:25)
#   ALERT_SMTP_FROM            sender address                            (default alertmanager@localhost)
#   ALERT_SMTP_USERNAME        SMTP login, empty for none
#   ALERT_SMTP_PASSWORD        SMTP password, empty for none
#   ALERT_SMTP_REQUIRE_TLS     true or false                             (default true)
#   ALERT_EMAIL_ML_PLATFORM    the ML platform team's address            (default ml-platform@localhost)
#   ALERT_EMAIL_DATA_SCIENCE   the data science team's address           (default data-science@localhost)
#   ALERT_WEBHOOK_URL          a generic webhook (chat tools)            (default http://localhost:9099/alerts)
#   ALERTMANAGER_TEMPLATE      the template   (default: alertmanager.yml.template beside this script)
#   ALERTMANAGER_CONFIG        the rendered file                         (default /alertmanager/alertmanager.yml)
set -eu
here=$(dirname "$0")
: "${ALERT_SMTP_SMARTHOST:=localhost:25}"
: "${ALERT_SMTP_FROM:=alertmanager@localhost}"
: "${ALERT_SMTP_USERNAME:=}"
: "${ALERT_SMTP_PASSWORD:=}"
: "${ALERT_SMTP_REQUIRE_TLS:=true}"
: "${ALERT_EMAIL_ML_PLATFORM:=ml-platform@localhost}"
: "${ALERT_EMAIL_DATA_SCIENCE:=data-science@localhost}"
: "${ALERT_WEBHOOK_URL:=http://localhost:9099/alerts}"
template=${ALERTMANAGER_TEMPLATE:-$here/alertmanager.yml.template}
config=${ALERTMANAGER_CONFIG:-/alertmanager/alertmanager.yml}

# Every value lands in a double-quoted YAML string: escape \ and " for YAML, then \, | and & for
# sed's replacement text, so that any value is taken literally.
escape() { printf '%s' "$1" | sed -e 's/[\\"]/\\&/g' | sed -e 's/[\\|&]/\\&/g'; }

sed \
    -e "s|\${ALERT_SMTP_SMARTHOST}|$(escape "$ALERT_SMTP_SMARTHOST")|g" \
    -e "s|\${ALERT_SMTP_FROM}|$(escape "$ALERT_SMTP_FROM")|g" \
    -e "s|\${ALERT_SMTP_USERNAME}|$(escape "$ALERT_SMTP_USERNAME")|g" \
    -e "s|\${ALERT_SMTP_PASSWORD}|$(escape "$ALERT_SMTP_PASSWORD")|g" \
    -e "s|\${ALERT_SMTP_REQUIRE_TLS}|$(escape "$ALERT_SMTP_REQUIRE_TLS")|g" \
    -e "s|\${ALERT_EMAIL_ML_PLATFORM}|$(escape "$ALERT_EMAIL_ML_PLATFORM")|g" \
    -e "s|\${ALERT_EMAIL_DATA_SCIENCE}|$(escape "$ALERT_EMAIL_DATA_SCIENCE")|g" \
    -e "s|\${ALERT_WEBHOOK_URL}|$(escape "$ALERT_WEBHOOK_URL")|g" \
    "$template" > "$config"

if [ "$#" -gt 0 ]; then
    exec "$@" --config.file="$config"
fi
