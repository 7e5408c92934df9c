import { formatBytes, formatDuration, formatPercent, formatRate, sparkPoints } from './format';

describe('format', () => {
  it('bytes', () => {
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(200 * 1024 * 1024)).toBe('200 MiB');
    expect(formatBytes(null)).toBe('–');
  });
  it('durations', () => {
    expect(formatDuration(5_000)).toBe('5s');
    expect(formatDuration(65_000)).toBe('1m 5s');
    expect(formatDuration(3_660_000)).toBe('1h 1m');
    expect(formatDuration(90_000_000)).toBe('1d 1h');
    expect(formatDuration(-1)).toBe('–');
  });
  it('percent and rate', () => {
    expect(formatPercent(12.345)).toBe('12.3%');
    expect(formatRate(3.14159)).toBe('3.1');
    expect(formatRate(250.4)).toBe('250');
  });
  it('spark points scale into the box', () => {
    expect(sparkPoints([], 10, 10)).toBe('');
    expect(sparkPoints([0, 10], 100, 22)).toBe('0.0,21.0 100.0,1.0');
    // A level: from its own low to its high; flat runs through the middle.
    expect(sparkPoints([100, 110], 100, 22, undefined, true)).toBe('0.0,21.0 100.0,1.0');
    expect(sparkPoints([48, 48, 48], 100, 22, undefined, true)).toBe('0.0,11.0 50.0,11.0 100.0,11.0');
  });
});
