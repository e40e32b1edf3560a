#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for trying `hydra/launcher=slurm` before a
# cluster and for the launcher's tests (tests/test_slurm.py; .ci/run starts it).
#
#   sudo bash scripts/local_slurm.sh start    # install (Debian/Ubuntu), configure, start
#   bash scripts/local_slurm.sh status        # sinfo
#   sudo bash scripts/local_slurm.sh stop
#
# Then:  python -m src.run -m poison_rate=0,0.1 experiment=smoke hydra/launcher=slurm \
#            hydra.launcher.partition=debug hydra.launcher.cpus_per_task=1 hydra.launcher.mem_gb=2
#
# What it sets up, from Debian's packages: munge with a fresh key; slurmctld and slurmd with one
# node (this host, all its cores, 80% of its memory) in one partition, `debug`; and accounting
# (slurmdbd over a local MariaDB), because submitit polls job states with `sacct`, which without
# accounting fails and warns on every poll. Root is needed to install packages and to run the
# daemons (SlurmUser=root). Everything listens on this host only.
set -euo pipefail

CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
PARTITION=debug

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "local_slurm.sh $1: run as root (sudo bash scripts/local_slurm.sh $1)" >&2
        exit 1
    fi
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v slurmdbd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null && command -v mariadbd >/dev/null; then
        return
    fi
    if ! command -v apt-get >/dev/null; then
        echo "local_slurm.sh: no apt-get here; install slurmctld, slurmd, slurmdbd," \
            "slurm-client, munge and mariadb-server with your package manager, then rerun" >&2
        exit 1
    fi
    echo "installing munge, slurmctld, slurmd, slurmdbd, slurm-client, mariadb-server (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        munge slurmctld slurmd slurmdbd slurm-client mariadb-server >/dev/null
}

start_munge() {
    mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
    chmod 0700 /etc/munge
    chmod 0400 /etc/munge/munge.key
    if ! pgrep -x munged >/dev/null; then
        runuser -u munge -- /usr/sbin/munged
    fi
    munge -n | unmunge >/dev/null  # the key works
}

start_accounting() {
    if ! mysqladmin ping >/dev/null 2>&1; then
        service mariadb start >/dev/null 2>&1 || (mysqld_safe >/dev/null 2>&1 &)
        for _ in $(seq 1 30); do
            mysqladmin ping >/dev/null 2>&1 && break
            sleep 1
        done
    fi
    mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
    mkdir -p "$CONF_DIR" "$LOG_DIR"
    cat >"$CONF_DIR/slurmdbd.conf" <<EOF
# written by scripts/local_slurm.sh: job accounting in a local MariaDB
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$LOG_DIR/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$CONF_DIR/slurmdbd.conf"
    pgrep -x slurmdbd >/dev/null || slurmdbd
    for _ in $(seq 1 30); do
        sacctmgr -n list cluster >/dev/null 2>&1 && break
        sleep 1
    done
}

write_conf() {
    local host cpus mem_mb
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
    mkdir -p "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
    cat >"$CONF_DIR/slurm.conf" <<EOF
# written by scripts/local_slurm.sh: a one-node cluster on $host
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start_slurm() {
    sacctmgr -i add cluster local >/dev/null 2>&1 || true  # "already exists" on a restart
    pgrep -x slurmctld >/dev/null || slurmctld
    pgrep -x slurmd >/dev/null || slurmd
    local host state
    host=$(hostname -s)
    for _ in $(seq 1 60); do
        state=$(sinfo -h -n "$host" -o %T 2>/dev/null || true)
        case "$state" in
            idle* | mix* | alloc*) echo "slurm is up: partition $PARTITION, node $host ($state)"; return ;;
            down* | drain*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
        esac
        sleep 1
    done
    echo "local_slurm.sh: the node did not come up (state: ${state:-none});" \
        "see $LOG_DIR/slurmctld.log and $LOG_DIR/slurmd.log" >&2
    exit 1
}

case "${1:-start}" in
    start)
        need_root start
        install_packages
        start_munge
        start_accounting
        write_conf
        start_slurm
        ;;
    stop)
        need_root stop
        pkill -x slurmd || true
        pkill -x slurmctld || true
        pkill -x slurmdbd || true
        pkill -x munged || true
        mysqladmin shutdown 2>/dev/null || true
        ;;
    status)
        sinfo
        ;;
    *)
        echo "usage: scripts/local_slurm.sh [start|stop|status]" >&2
        exit 2
        ;;
esac
