import { signal } from '@angular/core';
import { provideHttpClient } from '@angular/common/http';
import { provideHttpClientTesting } from '@angular/common/http/testing';
import { ComponentFixture, TestBed } from '@angular/core/testing';
import { Router, provideRouter } from '@angular/router';
import { API_BASE } from '../core/api';
import { PluginsStore } from '../core/plugins.store';
import { BASE_TABS, PluginPage, tabForKey } from './plugin-page';

describe('tabForKey', () => {
  const ids = ['overview', 'config', 'logs'];
  it('moves with the arrows, wrapping, and jumps with Home/End', () => {
    expect(tabForKey(ids, 'overview', 'ArrowRight')).toBe('config');
    expect(tabForKey(ids, 'logs', 'ArrowRight')).toBe('overview');
    expect(tabForKey(ids, 'overview', 'ArrowLeft')).toBe('logs');
    expect(tabForKey(ids, 'config', 'ArrowLeft')).toBe('overview');
    expect(tabForKey(ids, 'config', 'Home')).toBe('overview');
    expect(tabForKey(ids, 'config', 'End')).toBe('logs');
  });
  it('ignores other keys and an empty list', () => {
    expect(tabForKey(ids, 'config', 'Enter')).toBeNull();
    expect(tabForKey(ids, 'config', 'a')).toBeNull();
    expect(tabForKey([], 'x', 'ArrowRight')).toBeNull();
  });
});

describe('PluginPage tabs', () => {
  let fixture: ComponentFixture<PluginPage>;
  const el = () => fixture.nativeElement as HTMLElement;
  const tab = (id: string) => el().querySelector(`[role=tab][data-tab="${id}"]`) as HTMLElement;

  beforeEach(async () => {
    const store = { plugins: signal([]), pending: signal({}), loaded: signal(true), act: () => Promise.resolve() };
    TestBed.configureTestingModule({
      imports: [PluginPage],
      providers: [
        provideRouter([]),
        provideHttpClient(),
        provideHttpClientTesting(),
        { provide: API_BASE, useValue: '' },
        { provide: PluginsStore, useValue: store },
      ],
    });
    fixture = TestBed.createComponent(PluginPage);
    fixture.componentRef.setInput('id', 'echo');
    fixture.componentRef.setInput('tab', 'config');
    await fixture.whenStable();
  });

  it('has one tab stop (the selected tab) linked to the panel', () => {
    const tabs = Array.from(el().querySelectorAll('[role=tab]')) as HTMLElement[];
    expect(tabs.map((t) => t.dataset['tab'])).toEqual(BASE_TABS.map((t) => t.id));
    expect(tabs.filter((t) => t.getAttribute('tabindex') === '0').map((t) => t.dataset['tab'])).toEqual(['config']);
    expect(tab('config').getAttribute('aria-selected')).toBe('true');
    expect(tab('config').getAttribute('aria-controls')).toBe('plugin-tabpanel');
    expect(el().querySelector('[role=tabpanel]')!.getAttribute('aria-labelledby')).toBe('tab-config');
  });

  it('ArrowRight and End move the focus and navigate to that tab; other keys do nothing', () => {
    const router = TestBed.inject(Router);
    const navigate = vi.spyOn(router, 'navigate').mockResolvedValue(true);
    const list = el().querySelector('[role=tablist]')!;
    tab('config').focus();
    list.dispatchEvent(new KeyboardEvent('keydown', { key: 'ArrowRight', bubbles: true }));
    expect(navigate).toHaveBeenLastCalledWith(['/plugins', 'echo', 'logs']);
    expect(document.activeElement).toBe(tab('logs'));
    list.dispatchEvent(new KeyboardEvent('keydown', { key: 'End', bubbles: true }));
    expect(navigate).toHaveBeenLastCalledWith(['/plugins', 'echo', 'models']);
    expect(document.activeElement).toBe(tab('models'));
    list.dispatchEvent(new KeyboardEvent('keydown', { key: 'x', bubbles: true }));
    expect(navigate).toHaveBeenCalledTimes(2);
  });
});

describe('PluginPage: candle has one "Models" tab (downloads and its own panel together)', () => {
  let fixture: ComponentFixture<PluginPage>;
  const el = () => fixture.nativeElement as HTMLElement;

  const open = async (tab: string) => {
    const store = { plugins: signal([]), pending: signal({}), loaded: signal(true), act: () => Promise.resolve() };
    TestBed.configureTestingModule({
      imports: [PluginPage],
      providers: [
        provideRouter([]),
        provideHttpClient(),
        provideHttpClientTesting(),
        { provide: API_BASE, useValue: '' },
        { provide: PluginsStore, useValue: store },
      ],
    });
    fixture = TestBed.createComponent(PluginPage);
    fixture.componentRef.setInput('id', 'candle');
    fixture.componentRef.setInput('tab', tab);
    await fixture.whenStable();
    // The panel is loaded lazily: wait for it to render.
    for (let i = 0; i < 50 && !el().querySelector('[data-testid=candle-load]'); i++) {
      await new Promise((r) => setTimeout(r));
      await fixture.whenStable();
    }
  };

  it('lists the base tabs only, one of them "Models", which shows the candle panel above the downloads', async () => {
    await open('models');
    const tabs = Array.from(el().querySelectorAll('[role=tab]')) as HTMLElement[];
    expect(tabs.map((t) => t.dataset['tab'])).toEqual(BASE_TABS.map((t) => t.id));
    expect(tabs.filter((t) => /models/i.test(t.textContent!)).map((t) => t.textContent!.trim())).toEqual(['Models']);
    const panel = el().querySelector('[role=tabpanel]')!;
    expect(panel.querySelector('[data-testid=plugin-panel-in-tab] [data-testid=candle-load]')).not.toBeNull();
    expect(panel.querySelector('app-plugin-models')).not.toBeNull();
  });

  it('an old /panel link opens the Models tab', async () => {
    await open('panel');
    expect(el().querySelector('[role=tab][aria-selected=true]')!.getAttribute('data-tab')).toBe('models');
    expect(el().querySelector('[data-testid=candle-load]')).not.toBeNull();
  });
});
