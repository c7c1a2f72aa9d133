// The page's books on its frames: every frame sent ends in exactly one outcome from the server
// (a depth answer, an error with its seq, or a "dropped" notice), and every per-frame record
// (send time, camera snapshot) is forgotten on that outcome. Sequence numbers are the server's:
// the n-th binary message on a socket is seq n, so a seq is taken only when a frame is sent.
const RATE_WINDOW_MS = 2000;
const MAX_SNAPSHOTS = 4; // camera snapshots kept for answers still to come (the 3D view's colors)

export class FrameBook {
  constructor() { this.reset(); }

  // a new socket: its sequence numbers start again
  reset() {
    this.nextSeq = 0;
    this.sentAt = new Map(); // seq -> performance.now() when sent, until its outcome
    this.snapshots = new Map(); // seq -> ImageData of the camera frame sent
    this.answeredTimes = [];
    this.lastHeardAt = performance.now(); // the last outcome of any frame, or the first send
    this.lastSentAt = 0;
  }

  get outstanding() { return this.sentAt.size; }

  sent(snapshot = null) {
    const seq = this.nextSeq++;
    const now = performance.now();
    if (this.sentAt.size === 0) this.lastHeardAt = now; // waiting starts now
    this.sentAt.set(seq, now);
    this.lastSentAt = now;
    if (snapshot) {
      this.snapshots.set(seq, snapshot);
      while (this.snapshots.size > MAX_SNAPSHOTS) this.snapshots.delete(this.snapshots.keys().next().value);
    }
    return seq;
  }

  // one frame's outcome: returns {sentAt, snapshot} (either may be undefined)
  settle(seq) {
    const record = { sentAt: this.sentAt.get(seq), snapshot: this.snapshots.get(seq) };
    this.sentAt.delete(seq);
    this.snapshots.delete(seq);
    this.lastHeardAt = performance.now();
    return record;
  }

  settleRanges(ranges) {
    // a snapshot exists only for a frame still in sentAt: settle() forgets both
    for (const seq of [...this.sentAt.keys()]) {
      if (ranges.some(([first, last]) => seq >= first && seq <= last)) this.settle(seq);
    }
    this.lastHeardAt = performance.now();
  }

  answered() {
    const now = performance.now();
    this.answeredTimes.push(now);
    while (this.answeredTimes.length && now - this.answeredTimes[0] > RATE_WINDOW_MS) this.answeredTimes.shift();
  }

  // answered frames per second over the last RATE_WINDOW_MS
  fps() {
    const times = this.answeredTimes;
    const span = (performance.now() - times[0]) / 1000;
    return times.length > 1 && span > 0 ? (times.length - 1) / span : 0;
  }

  // frames are outstanding and nothing about any of them has been heard for limitMs
  stalled(limitMs) {
    return this.sentAt.size > 0 && performance.now() - this.lastHeardAt > limitMs;
  }
}
