/**
 * Process accounting read from /proc, so that no server has to report on
 * itself: CPU time (utime + stime, in clock ticks of 1/100 s) and resident
 * memory of any pid, including the bench's own and workerd's.
 *
 * @module
 */

/** Linux reports /proc times in USER_HZ, which is 100 on every architecture Deno runs on. */
const TICKS_PER_SECOND = 100;

/** CPU time a process has used so far, user and system, in microseconds. */
export function cpuTimes(pid: number): { user: number; sys: number } {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // Fields after the command name, which is in parentheses and may contain spaces.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const toUs = (ticks: string) => (Number(ticks) * 1e6) / TICKS_PER_SECOND;
  return { user: toUs(fields[11]), sys: toUs(fields[12]) };
}

/** Resident set size of a process, in bytes. */
export function rssBytes(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const match = status.match(/^VmRSS:\s+(\d+) kB$/m);
  if (!match) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(match[1]) * 1024;
}

/** RSS of several processes, summed. */
export function rssBytesOf(pids: number[]): number {
  return pids.reduce((sum, pid) => sum + rssBytes(pid), 0);
}

/** A CPU stopwatch over a set of processes. */
export class CpuMeter {
  #start: { user: number; sys: number };
  #startWall: number;

  constructor(readonly pids: number[]) {
    this.#start = this.#now();
    this.#startWall = performance.now();
  }

  #now(): { user: number; sys: number } {
    const total = { user: 0, sys: 0 };
    for (const pid of this.pids) {
      const t = cpuTimes(pid);
      total.user += t.user;
      total.sys += t.sys;
    }
    return total;
  }

  /** CPU microseconds used since construction (and how they split), and the wall time that passed. */
  read(): { cpuUs: number; userUs: number; sysUs: number; wallUs: number; cores: number } {
    const now = this.#now();
    const userUs = now.user - this.#start.user;
    const sysUs = now.sys - this.#start.sys;
    const cpuUs = userUs + sysUs;
    const wallUs = (performance.now() - this.#startWall) * 1000;
    return { cpuUs, userUs, sysUs, wallUs, cores: cpuUs / wallUs };
  }
}

/** CPU time the whole machine has been busy (all cores, all processes), in microseconds. */
export function machineBusyMicros(): number {
  const line = Deno.readTextFileSync("/proc/stat").split("\n", 1)[0];
  const [, ...fields] = line.trim().split(/\s+/);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = fields.map(Number);
  const busy = user + nice + system + irq + softirq + steal;
  void idle;
  void iowait;
  return (busy * 1e6) / TICKS_PER_SECOND;
}

/** A stopwatch of the whole machine's busy CPU time, to spot other load during a window. */
export class MachineMeter {
  #start = machineBusyMicros();
  #startWall = performance.now();

  /** Cores the whole machine kept busy on average since construction. */
  cores(): number {
    return (machineBusyMicros() - this.#start) / ((performance.now() - this.#startWall) * 1000);
  }
}
