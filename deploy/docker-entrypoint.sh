#!/bin/sh
# Entrypoint of the voltage-watcher image: runs the command it is given, as PID 1's only child
# (exec), so SIGTERM reaches uvicorn / Celery directly (Celery: warm shutdown).
#
# Shortcuts for the four roles (extra arguments are appended):
#   api      -> watcher api --host 0.0.0.0 --port ${PORT:-8080}
#   worker   -> celery -A watcher worker --loglevel INFO          (e.g. `worker -Q watcher.poll`)
#   beat     -> celery -A watcher beat --loglevel INFO --schedule $WATCHER_DATA_DIR/celerybeat-schedule
#   flower   -> watcher flower --address 0.0.0.0 --port ${FLOWER_PORT:-5555}
# Anything else runs as given: `watcher config`, `celery -A watcher inspect ping`, `sh`, ...
set -eu

if [ "$#" -eq 0 ]; then
    set -- api
fi

if [ "$(id -u)" = "0" ]; then
    echo "voltage-watcher: refusing to run as root; run the image as its own user (10001)" >&2
    exit 1
fi

role="$1"
case "$role" in
    api)
        shift
        set -- watcher api --host 0.0.0.0 --port "${PORT:-8080}" "$@"
        ;;
    worker)
        shift
        set -- celery -A watcher worker --loglevel INFO "$@"
        ;;
    beat)
        shift
        set -- celery -A watcher beat --loglevel INFO --schedule "${WATCHER_DATA_DIR:-/var/lib/voltage-watcher}/celerybeat-schedule" "$@"
        ;;
    flower)
        shift
        set -- watcher flower --address 0.0.0.0 --port "${FLOWER_PORT:-5555}" "$@"
        ;;
esac

exec "$@"
