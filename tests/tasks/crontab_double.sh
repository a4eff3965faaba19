#!/bin/sh
# Stands in for crontab(1) in tests (settings.CRONTAB_EXECUTABLE): `crontab -l`
# prints the table kept in $CRONTAB_FILE, `crontab FILE` installs FILE as the table.
if [ "$1" = "-l" ]; then
    cat "$CRONTAB_FILE" 2>/dev/null
else
    cp "$1" "$CRONTAB_FILE"
fi
