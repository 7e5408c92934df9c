import { Injectable, signal } from '@angular/core';

/** A one-second clock for uptimes and relative times (one timer for the whole app). */
@Injectable({ providedIn: 'root' })
export class Clock {
  readonly now = signal(Date.now());
  constructor() {
    setInterval(() => this.now.set(Date.now()), 1000);
  }
}
