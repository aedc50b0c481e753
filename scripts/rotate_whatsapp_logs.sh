#!/bin/sh
# Rotate the WhatsApp queue daemon's logs. Meant for the crontab of the user
# that runs the agent, once a day at midnight:
#
#   0 0 * * * /Users/you/phone-numbers-seg/scripts/rotate_whatsapp_logs.sh
#
# Usage: rotate_whatsapp_logs.sh [--cron-log-only] [LOG_DIR]
#        rotate_whatsapp_logs.sh --newsyslog [LOG_DIR]
#
# LOG_DIR is the argument, else $WHATSAPP_LOG_DIR, else var/logs of the checkout
# that holds this script; the script works from any directory.
#
# whatsapp_queue.log, the daemon's log: renamed to whatsapp_queue.log.YYYYMMDD
# (the day of the rotation; -HHMMSS is added when that name is taken), a new
# empty log (mode 644, same owner) is created in its place and the archive is
# gzipped. The daemon notices the new file at its next line (it reopens the path
# when the inode changes), so no line is lost; the one line it may be writing
# during the rename lands in the archive, which is why gzip waits
# $WHATSAPP_ROTATE_SETTLE seconds (1).
#
# whatsapp_queue_cron.log, launchd's stdout and stderr: the daemon inherits it
# from launchd, opened once (O_APPEND) and never reopened, so it is copied to
# whatsapp_queue_cron.log.YYYYMMDD[-HHMMSS], gzipped, and truncated in place.
# What arrives during the copy is copied again just before the truncation, so
# only a line written in the few microseconds between that last read and the
# truncation would be lost; this file gets start-up errors and tracebacks only.
#
# Archives dated $WHATSAPP_LOG_KEEP_DAYS (30) days or more before today are
# deleted, so 30 days are kept. An empty log is not rotated and an archive left
# uncompressed by an interrupted run is gzipped, so running it again is safe.
#
# --cron-log-only  handle whatsapp_queue_cron.log only: for a setup where
#                  newsyslog rotates whatsapp_queue.log (launchd/newsyslog.conf.in)
# --newsyslog      print launchd/newsyslog.conf.in filled in for this checkout,
#                  to install in /etc/newsyslog.d/ (see that file); rotate nothing
#
# Exit status: 0 done, 1 error, 2 bad usage; errors are one line on stderr.
# POSIX sh: runs with macOS's /bin/sh and /bin/bash 3.2, and with dash or bash.

set -eu

prog=${0##*/}
main_base=whatsapp_queue.log
cron_base=whatsapp_queue_cron.log

die() {
    printf '%s: %s\n' "$prog" "$*" >&2
    exit 1
}

usage() {
    printf '%s: %s; usage: %s [--cron-log-only | --newsyslog] [LOG_DIR]\n' \
        "$prog" "$*" "$prog" >&2
    exit 2
}

# try WHAT COMMAND...: run COMMAND; on failure die with WHAT and its first error.
try() {
    what=$1
    shift
    if ! err=$("$@" 2>&1); then
        die "$what: $(printf '%s\n' "$err" | sed -n '1p')"
    fi
}

size() {
    wc -c <"$1" | tr -d ' \t\n'
}

truncate_file() {
    : >"$1"
}

# days_before YYYYMMDD N: the date N days earlier (BSD date, then GNU date).
days_before() {
    date -j -v-"$2"d -f %Y%m%d "$1" +%Y%m%d 2>/dev/null ||
        date -d "$1 12:00 $2 days ago" +%Y%m%d 2>/dev/null
}

# free_name BASE: the first of BASE.DAY, BASE.DAY-HHMMSS, BASE.DAY-HHMMSS-N
# (N = 2, 3...) that exists neither as it is nor gzipped.
free_name() {
    candidate=$dir/$1.$today
    if [ -e "$candidate" ] || [ -e "$candidate.gz" ]; then
        candidate=$dir/$1.$today-$clock
        n=1
        while [ -e "$candidate" ] || [ -e "$candidate.gz" ]; do
            n=$((n + 1))
            candidate=$dir/$1.$today-$clock-$n
        done
    fi
    printf '%s\n' "$candidate"
}

# is_archive BASE FILE: FILE is BASE.YYYYMMDD[-HHMMSS[-N]][.gz]; sets $day.
is_archive() {
    rest=${2#"$dir/$1".}
    case $rest in
    */* | "$2") return 1 ;;
    esac
    day=${rest%%[!0-9]*}
    [ "${#day}" -eq 8 ] || return 1
    rest=${rest#"$day"}
    rest=${rest%.gz}
    case $rest in
    "" | -[0-9][0-9][0-9][0-9][0-9][0-9] | -[0-9][0-9][0-9][0-9][0-9][0-9]-[0-9]*)
        return 0
        ;;
    esac
    return 1
}

rotate_main() {
    log=$dir/$main_base
    [ -s "$log" ] || return 0
    # ls, not stat: stat's options differ between macOS and Linux.
    # shellcheck disable=SC2012
    owner=$(ls -ln "$log" | awk '{ print $3 ":" $4 }')
    archive=$(free_name "$main_base")
    try "cannot rename $log" mv -f "$log" "$archive"
    rotated=1
    # The daemon may have created the log itself since the rename (its next
    # line): then keep its file, whose lines would be lost if it were replaced.
    if (set -C && : >"$log") 2>/dev/null; then
        try "cannot set the mode of $log" chmod 644 "$log"
        if [ "$(id -u)" -eq 0 ]; then
            try "cannot give $log back to $owner" chown "$owner" "$log"
        fi
    fi
}

rotate_cron() {
    cron=$dir/$cron_base
    [ -s "$cron" ] || return 0
    archive=$(free_name "$cron_base")
    try "cannot copy $cron" cp -p "$cron" "$archive"
    copied=$(size "$archive")
    rounds=0
    while [ "$rounds" -lt 5 ] && [ "$(size "$cron")" -gt "$copied" ]; do
        tail -c +"$((copied + 1))" "$cron" >>"$archive"
        copied=$(size "$archive")
        rounds=$((rounds + 1))
    done
    try "cannot truncate $cron" truncate_file "$cron"
}

compress_left() {
    for file in "$dir/$1".*; do
        [ -f "$file" ] || continue
        case $file in *.gz) continue ;; esac
        is_archive "$1" "$file" || continue
        try "cannot gzip $file" gzip -f "$file"
    done
}

prune() {
    for file in "$dir/$1".*.gz; do
        [ -f "$file" ] || continue
        is_archive "$1" "$file" || continue
        if [ "$day" -le "$cutoff" ]; then
            try "cannot delete $file" rm -f "$file"
        fi
    done
}

print_newsyslog() {
    template=$project/launchd/newsyslog.conf.in
    [ -r "$template" ] || die "cannot read $template"
    log=$dir/$main_base
    case $log in
    *[[:space:]\#\|\&\\]*)
        die "$log: newsyslog and sed cannot take a space or # | & \\ in the path"
        ;;
    esac
    if [ "$(id -u)" -eq 0 ]; then
        # Under sudo: the owner of the log directory is the agent's user.
        # shellcheck disable=SC2012
        owner=$(ls -ld "$dir" | awk '{ print $3 }')
        # shellcheck disable=SC2012
        group=$(ls -ld "$dir" | awk '{ print $4 }')
    else
        owner=$(id -un)
        group=$(id -gn)
    fi
    printf '# whatsapp_daemon: %s rendered by %s --newsyslog\n' "$template" "$prog"
    printf '# logfile  owner:group  mode  count  size  when  flags\n'
    sed -e '/^#/d' -e '/^[[:space:]]*$/d' \
        -e "s|@LOG@|$log|g" -e "s|@OWNER@|$owner|g" -e "s|@GROUP@|$group|g" \
        "$template"
}

# -- arguments ----------------------------------------------------------------

mode=all
dir_arg=
while [ $# -gt 0 ]; do
    case $1 in
    --cron-log-only) mode=cron ;;
    --newsyslog) mode=newsyslog ;;
    -h | --help)
        sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
        exit 0
        ;;
    --) shift && break ;;
    -*) usage "unknown option $1" ;;
    *)
        [ -z "$dir_arg" ] || usage "one log directory only"
        dir_arg=$1
        ;;
    esac
    shift
done
if [ $# -gt 0 ]; then
    if [ -n "$dir_arg" ] || [ $# -gt 1 ]; then
        usage "one log directory only"
    fi
    dir_arg=$1
fi

case $0 in
*/*) self=$0 ;;
*) self=$(command -v -- "$0") || die "cannot find where $0 lives" ;;
esac
while [ -L "$self" ]; do # a symbolic link, e.g. in ~/bin: find the checkout's copy
    target=$(readlink "$self") || die "cannot read the link $self"
    case $target in
    /*) self=$target ;;
    *) self=$(dirname -- "$self")/$target ;;
    esac
done
project=$(cd -P -- "$(dirname -- "$self")/.." && pwd) ||
    die "cannot find the checkout of $self"

dir=${dir_arg:-${WHATSAPP_LOG_DIR:-$project/var/logs}}
[ -d "$dir" ] || die "no log directory $dir (pass one or set WHATSAPP_LOG_DIR)"
dir=$(cd -P -- "$dir" && pwd) || die "cannot enter $dir"

keep=${WHATSAPP_LOG_KEEP_DAYS:-30}
settle=${WHATSAPP_ROTATE_SETTLE:-1}
case $keep in
'' | *[!0-9]* | 0) die "WHATSAPP_LOG_KEEP_DAYS must be a number of days > 0: $keep" ;;
esac
case $settle in
'' | *[!0-9]*) die "WHATSAPP_ROTATE_SETTLE must be a number of seconds: $settle" ;;
esac

if [ "$mode" = newsyslog ]; then
    print_newsyslog
    exit 0
fi

# -- rotation -----------------------------------------------------------------

[ -w "$dir" ] || die "cannot write in $dir"
command -v gzip >/dev/null 2>&1 || die "gzip is not installed"

now=$(date +%Y%m%d-%H%M%S)
today=${now%-*}
clock=${now#*-}
cutoff=$(days_before "$today" "$keep") ||
    die "date can compute neither 'date -j -v' (BSD) nor 'date -d' (GNU) dates"

# One run at a time: a second one could pick the same archive name.
lock=$dir/.rotate_whatsapp_logs.lock
if ! mkdir "$lock" 2>/dev/null; then
    holder=$(cat "$lock/pid" 2>/dev/null || true)
    if [ -n "$holder" ] && kill -0 "$holder" 2>/dev/null; then
        die "another rotation is running (PID $holder); $lock is its lock"
    fi
    rm -rf "$lock"
    mkdir "$lock" 2>/dev/null || die "cannot take the lock $lock"
fi
trap 'rm -rf "$lock"' EXIT
trap 'exit 1' HUP INT TERM
echo $$ >"$lock/pid"

rotated=0
if [ "$mode" = all ]; then
    rotate_main
fi
rotate_cron

if [ "$rotated" -eq 1 ] && [ "$settle" -gt 0 ]; then
    sleep "$settle"
fi
if [ "$mode" = all ]; then
    compress_left "$main_base"
    prune "$main_base"
fi
compress_left "$cron_base"
prune "$cron_base"
