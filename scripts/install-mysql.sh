#!/usr/bin/env bash
# Installs a MySQL server (mysqld, mysqlbinlog, the mysql client) for coffer's tests into
# a private prefix, from Debian sid's packages, WITHOUT touching the system's packages.
#
# Why: Debian 12 has no MySQL package, and sid's mysql-server-core needs a newer libc,
# libstdc++, ICU and protobuf than bookworm has. So this script takes the .debs from the
# sid index, extracts them (dpkg-deb -x, no maintainer scripts, no dpkg database) into
# $PREFIX, and runs the binaries through sid's own dynamic loader with a library path
# inside the prefix. Nothing under /etc or /usr is changed.
#
#   PREFIX/bin/mysqld, PREFIX/bin/mysqlbinlog, PREFIX/bin/mysql   wrappers to run
#   PREFIX/usr/share/mysql       lc-messages dir (pass --lc-messages-dir; see below)
#   PREFIX/usr/lib/mysql/plugin  plugin dir
#
# Callers must pass --no-defaults first (otherwise mysqld reads the host's
# /etc/mysql/my.cnf, which belongs to MariaDB here) and --basedir=PREFIX/usr
# --lc-messages-dir=PREFIX/usr/share/mysql (otherwise mysqld reads /usr/share/mysql,
# which holds MariaDB's incompatible errmsg.sys).
#
# Which packages: mysql-server-core and mysql-client-core, libc6 (the loader), and then
# only the shared libraries the loader reports as missing for the binaries, found by
# following the Depends of the packages already taken (one level at a time). Candidates
# whose name looks like a missing library are tried first and the search stops as soon as
# nothing is missing, so e.g. libcurl's chain (a Depends of mysql-server-core that
# mysqld itself does not link) is never downloaded. No version or pool path is written
# here: everything comes from the current index, and every .deb's SHA256 is checked
# against it.
#
# Idempotent: when PREFIX/.complete exists and the mysqld wrapper runs, it exits at once
# without network access. COFFER_MYSQL_REFRESH=1 forces a fresh install (e.g. after sid
# moved); the new tree is built beside the old one and swapped in only when complete.
#
# Environment: COFFER_MYSQL_PREFIX (default /opt/coffer-mysql), COFFER_MYSQL_MIRROR
# (default http://deb.debian.org/debian), COFFER_MYSQL_SUITE (default sid),
# COFFER_MYSQL_REFRESH=1.
set -euo pipefail

PREFIX=${COFFER_MYSQL_PREFIX:-/opt/coffer-mysql}
MIRROR=${COFFER_MYSQL_MIRROR:-http://deb.debian.org/debian}
SUITE=${COFFER_MYSQL_SUITE:-sid}
ARCH=amd64
MULTIARCH=x86_64-linux-gnu
# The packages asked for; libc6 is needed in any case because it holds the loader.
ROOT_PACKAGES=(mysql-server-core mysql-client-core libc6)
# Binaries (relative to the prefix) whose libraries must all resolve inside the prefix,
# and the name of the wrapper made for each.
BINARIES=(usr/sbin/mysqld usr/bin/mysqlbinlog usr/bin/mysql)
LOADER_REL=usr/lib64/ld-linux-x86-64.so.2

log() { printf 'install-mysql: %s\n' "$*" >&2; }
die() {
    printf 'install-mysql: ERROR: %s\n' "$*" >&2
    exit 1
}

if [[ -f "$PREFIX/.complete" && "${COFFER_MYSQL_REFRESH:-0}" != 1 ]] &&
    version=$("$PREFIX/bin/mysqld" --version 2>/dev/null); then
    log "already installed in $PREFIX: $version"
    exit 0
fi

for tool in curl xz dpkg-deb sha256sum awk; do
    command -v "$tool" >/dev/null || die "$tool is required (apt-get install curl xz-utils dpkg coreutils gawk)"
done

parent=$(dirname "$PREFIX")
mkdir -p "$parent"
WORK=$(mktemp -d)
# Built next to the final place, so the final rename is atomic (same file system).
STAGE=$(mktemp -d "$parent/.coffer-mysql.new.XXXXXX")
cleanup() { rm -rf "$WORK" "$STAGE"; }
trap cleanup EXIT

# --- the index -------------------------------------------------------------------------
# One awk pass reads sid's whole index (about 77,000 packages) and keeps only the
# dependency closure of ROOT_PACKAGES, one line a package: name, Filename, SHA256, and its
# dependencies as real package names. Resolution rules: "a | b" takes the first
# alternative that exists; a virtual name goes to its first provider; ":any" dependencies
# (interpreters such as perl:any, used by scripts, never linked) are dropped. The closure
# is a superset (libcurl's chain is in it); what is downloaded is decided below by what
# the loader actually misses.
INDEX="$WORK/index.tsv"
log "downloading the $SUITE/main $ARCH package index from $MIRROR"
curl -fsSL --retry 3 -o "$WORK/Packages.xz" "$MIRROR/dists/$SUITE/main/binary-$ARCH/Packages.xz" ||
    die "cannot download $MIRROR/dists/$SUITE/main/binary-$ARCH/Packages.xz"
INDEX_BYTES=$(stat -c %s "$WORK/Packages.xz")
xz -dc "$WORK/Packages.xz" | awk -v roots="${ROOT_PACKAGES[*]}" '
    function emit() {
        if (n != "" && !(n in file)) {
            file[n] = f; sha[n] = s; deps[n] = pd ((pd != "" && d != "") ? ", " : "") d
            np = split(pr, v, /, */)
            for (i = 1; i <= np; i++) {
                sub(/ .*/, "", v[i])
                if (!(v[i] in provider)) provider[v[i]] = n
            }
        }
        n = ""
    }
    function real(x) {
        if (x in file) return x
        if (x in provider) return provider[x]
        return ""
    }
    /^Package: /     { emit(); n = $2; f = ""; s = ""; d = ""; pd = ""; pr = ""; next }
    /^Filename: /    { f = $2; next }
    /^SHA256: /      { s = $2; next }
    /^Depends: /     { d = substr($0, 10); next }
    /^Pre-Depends: / { pd = substr($0, 14); next }
    /^Provides: /    { pr = substr($0, 11); next }
    END {
        emit()
        nq = split(roots, queue, " ")
        for (i = 1; i <= nq; i++) {
            r = real(queue[i])
            if (r == "") { print queue[i] "\t\t\t"; continue }
            queue[i] = r; queued[r] = 1
        }
        for (qi = 1; qi <= nq; qi++) {
            p = queue[qi]
            if (!(p in file)) continue
            out = ""
            nd = split(deps[p], dl, /, */)
            for (j = 1; j <= nd; j++) {
                na = split(dl[j], alts, / *\| */)
                for (k = 1; k <= na; k++) {
                    a = alts[k]
                    gsub(/\(.*\)|\[.*\]/, "", a); gsub(/^ +| +$/, "", a)
                    if (a ~ /:any$/) break
                    sub(/:.*/, "", a)
                    r = real(a)
                    if (r != "") {
                        out = out " " r
                        if (!(r in queued)) { queued[r] = 1; queue[++nq] = r }
                        break
                    }
                }
            }
            print p "\t" file[p] "\t" sha[p] "\t" substr(out, 2)
        }
    }
' >"$INDEX"
[[ -s "$INDEX" ]] || die "the package index is empty"

# field PACKAGE COLUMN: a column of the package's index line (empty if absent).
field() { awk -F'\t' -v p="$1" -v c="$2" '$1 == p { print $c; exit }' "$INDEX"; }

# depends PACKAGE: its dependencies, one real package name a line.
depends() { field "$1" 4 | tr ' ' '\n'; }

# --- downloading and extracting --------------------------------------------------------
DOWNLOADED_BYTES=0
DEB=
declare -A TAKEN=() TRIED=()

# fetch PACKAGE: downloads its .deb into $WORK/debs, checks the SHA256, sets DEB to its
# path (a global, not output: a failure inside $(...) would not stop the script).
fetch() {
    local pkg=$1 file sha
    file=$(field "$pkg" 2)
    sha=$(field "$pkg" 3)
    [[ -n "$file" && -n "$sha" ]] || die "package $pkg is not in the $SUITE index"
    mkdir -p "$WORK/debs"
    DEB="$WORK/debs/$(basename "$file")"
    curl -fsSL --retry 3 -o "$DEB" "$MIRROR/$file" || die "cannot download $MIRROR/$file"
    echo "$sha  $DEB" | sha256sum -c --quiet - >/dev/null 2>&1 ||
        die "SHA256 mismatch for $file (index says $sha): the mirror changed under us; run again"
    DOWNLOADED_BYTES=$((DOWNLOADED_BYTES + $(stat -c %s "$DEB")))
}

take() { # take PACKAGE DEB: extracts into the stage.
    dpkg-deb -x "$2" "$STAGE"
    TAKEN[$1]=1
    log "  + $1 ($(basename "$2"))"
}

# --- what the loader cannot find -------------------------------------------------------
library_path() {
    echo "$STAGE/usr/lib/$MULTIARCH:$STAGE/lib/$MULTIARCH:$STAGE/usr/lib"
}

# missing [all]: sonames (one a line) that the loader resolves to nothing or to a file
# outside the stage (the host's bookworm libraries, which must not be mixed in), for any
# of the binaries. Without "all", only those a file INSIDE the stage asks for: a host
# library loaded in the meantime (say bookworm's libedit) pulls in its own dependencies,
# which the stage's version may not need, and chasing those would download packages for
# nothing.
#
# Uses the loader's trace mode (what ldd does): `ld.so --list` stops at the first library
# it cannot find (exit 127, "error while loading shared libraries"), whereas
# LD_TRACE_LOADED_OBJECTS=1 lists every one, "not found" included; LD_DEBUG=files adds
# "file=SONAME [0];  needed by REQUESTER" lines on stderr.
missing() {
    local bin out
    for bin in "${BINARIES[@]}"; do
        [[ -e "$STAGE/$bin" ]] || die "$bin is not in the extracted packages (did its package move?)"
        out=$(LD_DEBUG=files LD_TRACE_LOADED_OBJECTS=1 "$STAGE/$LOADER_REL" --inhibit-cache \
            --library-path "$(library_path)" "$STAGE/$bin" 2>"$WORK/ld-debug") || true
        grep -q 'libc\.so\.6 => ' <<<"$out" ||
            die "the loader could not list the libraries of $bin: $out $(tail -5 "$WORK/ld-debug")"
        awk -v stage="$STAGE/" -v all="${1:-}" '
            FNR == NR {
                if (match($0, /file=[^ ]+ \[0\]; +needed by [^ ]+/)) {
                    split(substr($0, RSTART, RLENGTH), w, /[ =]+/)
                    if (!(w[2] in by)) by[w[2]] = w[6]
                }
                next
            }
            / => / {
                bad = ($0 ~ / => not found/) || index($3, stage) != 1
                if (bad && (all == "all" || index(by[$1], stage) == 1)) print $1
            }
        ' "$WORK/ld-debug" - <<<"$out"
    done | sort -u
}

# stem NAME: a package or soname reduced to a comparable stem: "libicu78" -> "libicu",
# "libssl3t64" -> "libssl", "libicuuc.so.78" -> "libicuuc", "libgcc_s.so.1" -> "libgcc-s".
stem() {
    echo "$1" | sed -E 's/\.so(\..*)?$//; s/_/-/g; s/t64$//; s/[-0-9.]+$//'
}

# --- resolve ---------------------------------------------------------------------------
log "resolving from $SUITE: ${ROOT_PACKAGES[*]} and the libraries their binaries load"
for pkg in $(cut -f1 "$INDEX" | head -n "${#ROOT_PACKAGES[@]}"); do
    TRIED[$pkg]=1
    fetch "$pkg"
    take "$pkg" "$DEB"
done
[[ -x "$STAGE/$LOADER_REL" ]] || die "libc6 did not provide $LOADER_REL"

round=0
while :; do
    mapfile -t need < <(missing)
    ((${#need[@]} == 0)) && break
    round=$((round + 1))
    ((round <= 20)) || die "still missing after 20 rounds: ${need[*]}"
    log "round $round: missing ${need[*]}"

    declare -A still=()
    for so in "${need[@]}"; do still[$so]=1; done

    # Candidates: dependencies of taken packages not tried yet; first those whose name
    # looks like a soname still missing (libicu78 for libicuuc.so.78), then the rest
    # (libgoogle-perftools4t64 for libtcmalloc.so.4), stopping when nothing is missing.
    declare -A seen=()
    candidates=()
    for pkg in $(printf '%s\n' "${!TAKEN[@]}" | sort); do
        for dep in $(depends "$pkg"); do
            [[ -n "${TRIED[$dep]:-}" || -n "${seen[$dep]:-}" ]] && continue
            seen[$dep]=1
            candidates+=("$dep")
        done
    done
    unset seen

    progress=
    for pass in likely others; do
        for dep in "${candidates[@]}"; do
            ((${#still[@]} == 0)) && break 2
            [[ -n "${TRIED[$dep]:-}" ]] && continue
            if [[ $pass == likely ]]; then
                s=$(stem "$dep") match=
                for so in "${!still[@]}"; do
                    [[ "$(stem "$so")" == "$s"* ]] && match=1
                done
                [[ -n "$match" ]] || continue
            fi
            TRIED[$dep]=1
            fetch "$dep"
            provided=()
            while read -r path; do
                base=$(basename "$path")
                if [[ -n "${still[$base]:-}" ]]; then
                    provided+=("$base")
                    unset "still[$base]"
                fi
            done < <(dpkg-deb -c "$DEB" | awk '{ print $6 }' | grep -E '/lib(64)?/' || true)
            if ((${#provided[@]} > 0)); then
                take "$dep" "$DEB"
                progress=1
            else
                log "  - $dep (probed: has none of the missing libraries)"
            fi
        done
    done
    unset still
    if [[ -z "$progress" ]]; then
        die "no dependency of the taken packages provides: ${need[*]} (needed by ${BINARIES[*]}; see LD_TRACE_LOADED_OBJECTS=1 $STAGE/$LOADER_REL --library-path $(library_path) $STAGE/usr/sbin/mysqld)"
    fi
done

# --- layout and wrappers ---------------------------------------------------------------
# The loader where the brief's commands (and the binaries' PT_INTERP) expect it.
ln -sfn usr/lib64 "$STAGE/lib64"
mkdir -p "$STAGE/bin"
for bin in "${BINARIES[@]}"; do
    name=$(basename "$bin")
    cat >"$STAGE/bin/$name" <<EOF
#!/bin/sh
# Generated by coffer's scripts/install-mysql.sh: runs the prefix's $name through the
# prefix's own (Debian $SUITE) loader and libraries; the host's libraries are not used.
p=\$(dirname "\$(dirname "\$(readlink -f "\$0")")")
exec "\$p/lib64/ld-linux-x86-64.so.2" --inhibit-cache \\
    --library-path "\$p/usr/lib/$MULTIARCH:\$p/lib/$MULTIARCH:\$p/usr/lib" \\
    "\$p/$bin" "\$@"
EOF
    chmod 0755 "$STAGE/bin/$name"
done

# Final check, through the wrappers, in the stage.
left=$(missing all | tr '\n' ' ')
[[ -z "$left" ]] || die "libraries not found inside $PREFIX: $left"
version=$("$STAGE/bin/mysqld" --version | sed 's/^.*mysqld *//') || die "the staged mysqld does not run: $STAGE/bin/mysqld --version"
"$STAGE/bin/mysqlbinlog" --version >/dev/null || die "the staged mysqlbinlog does not run"
"$STAGE/bin/mysql" --version >/dev/null || die "the staged mysql client does not run"

{
    echo "suite=$SUITE"
    echo "version=$version"
    for pkg in "${!TAKEN[@]}"; do echo "package=$pkg $(field "$pkg" 2)"; done | sort
} >"$STAGE/.complete"
chmod 0755 "$STAGE"

# Swap in.
if [[ -e "$PREFIX" ]]; then
    old="$parent/.coffer-mysql.old.$$"
    mv "$PREFIX" "$old"
    mv "$STAGE" "$PREFIX"
    rm -rf "$old"
else
    mv "$STAGE" "$PREFIX"
fi
log "installed $version in $PREFIX (downloaded $((INDEX_BYTES / 1024 / 1024)) MiB index + $((DOWNLOADED_BYTES / 1024 / 1024)) MiB of .debs, $(du -sm "$PREFIX" | cut -f1) MiB on disk)"
log "packages: $(sort <<<"$(printf '%s\n' "${!TAKEN[@]}")" | tr '\n' ' ')"
