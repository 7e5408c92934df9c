import { ComponentFixture, TestBed } from '@angular/core/testing';
import { formatBytes } from './format';
import { LineChart } from './line-chart';

describe('LineChart', () => {
  let fixture: ComponentFixture<LineChart>;
  const el = () => fixture.nativeElement as HTMLElement;
  const legend = (name: string) => el().querySelector(`[data-series="${name}"]`)!.textContent!.trim();

  beforeEach(() => {
    TestBed.configureTestingModule({ imports: [LineChart] });
    fixture = TestBed.createComponent(LineChart);
    fixture.componentRef.setInput('title', 'Heap');
  });

  it('shows the last value and the max with a unit', async () => {
    fixture.componentRef.setInput('unit', '%');
    fixture.componentRef.setInput('series', [{ name: 'CPU', color: '#000', values: [1, 12.345, 3] }]);
    await fixture.whenStable();
    expect(legend('CPU')).toBe('CPU: 3%');
    expect(el().querySelector('[data-testid=chart-max]')!.textContent).toBe('max 12.35%');
  });

  it('formats bytes with a format function (a small heap is not "0 MiB"), gaps for null', async () => {
    fixture.componentRef.setInput('format', formatBytes);
    fixture.componentRef.setInput('hint', 'heap held by the library');
    fixture.componentRef.setInput('series', [{ name: 'heap', color: '#000', values: [null, 777, 95 * 1048576] }]);
    await fixture.whenStable();
    expect(legend('heap')).toBe('heap: 95.0 MiB');
    expect(el().querySelector('[data-testid=chart-max]')!.textContent).toBe('max 95.0 MiB');
    expect(el().querySelector('[title="heap held by the library"]')!.textContent).toBe('Heap');
    // Two points: the missing first sample leaves a gap.
    expect(el().querySelector('polyline')!.getAttribute('points')!.split(' ').length).toBe(2);
    fixture.componentRef.setInput('series', [{ name: 'heap', color: '#000', values: [771] }]);
    await fixture.whenStable();
    expect(legend('heap')).toBe('heap: 771 B');
    fixture.componentRef.setInput('series', [{ name: 'heap', color: '#000', values: [null] }]);
    await fixture.whenStable();
    expect(legend('heap')).toBe('heap: –');
  });
});
