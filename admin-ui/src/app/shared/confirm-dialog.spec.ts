import { provideHttpClient } from '@angular/common/http';
import { HttpTestingController, provideHttpClientTesting } from '@angular/common/http/testing';
import { ChangeDetectionStrategy, Component } from '@angular/core';
import { ComponentFixture, TestBed } from '@angular/core/testing';
import { provideRouter } from '@angular/router';
import { App } from '../app';
import { ConfirmStore } from '../core/confirm.store';
import { PluginDetail } from '../core/models';
import { PluginsStore } from '../core/plugins.store';
import { Dashboard } from '../pages/dashboard';
import { ConfirmDialog } from './confirm-dialog';

const tick = () => new Promise((r) => setTimeout(r));
const plugin = (id: string, extra: Partial<PluginDetail> = {}): PluginDetail => ({
  id, name: id, version: '1.0.0', description: '', state: 'running', generation: 1, capabilities: [], routes: [], history: [], ...extra,
});
const key = (el: Element, k: string, shiftKey = false) =>
  el.dispatchEvent(new KeyboardEvent('keydown', { key: k, shiftKey, bubbles: true, cancelable: true }));

@Component({
  selector: 'app-test-host',
  imports: [Dashboard, ConfirmDialog],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `<app-dashboard /><app-confirm-dialog />`,
})
class DashboardWithDialog {}

describe('ConfirmDialog', () => {
  let fixture: ComponentFixture<ConfirmDialog>;
  let confirm: InstanceType<typeof ConfirmStore>;
  let opener: HTMLButtonElement;
  const el = () => fixture.nativeElement as HTMLElement;
  const dialog = () => el().querySelector('[role=alertdialog]') as HTMLElement | null;
  const button = (id: string) => el().querySelector(`[data-testid=${id}]`) as HTMLButtonElement;

  beforeEach(async () => {
    TestBed.configureTestingModule({ imports: [ConfirmDialog] });
    confirm = TestBed.inject(ConfirmStore);
    fixture = TestBed.createComponent(ConfirmDialog);
    await fixture.whenStable();
    opener = document.createElement('button');
    document.body.appendChild(opener);
    opener.focus();
  });
  afterEach(() => opener.remove());

  const open = async () => {
    const answer = confirm.ask({ title: 'Stop apikeys?', message: 'Only the bootstrap admin key will work.', confirmLabel: 'Stop anyway' });
    await fixture.whenStable();
    return { answer };
  };

  it('is an alertdialog named by its title, described by the message, with the focus on Cancel', async () => {
    expect(dialog()).toBeNull();
    await open();
    const d = dialog()!;
    expect(d.getAttribute('aria-modal')).toBe('true');
    expect(document.getElementById(d.getAttribute('aria-labelledby')!)!.textContent).toBe('Stop apikeys?');
    expect(document.getElementById(d.getAttribute('aria-describedby')!)!.textContent).toContain('bootstrap admin key');
    expect(button('confirm-ok').textContent!.trim()).toBe('Stop anyway');
    expect(document.activeElement).toBe(button('confirm-cancel'));
  });

  it('Escape cancels, closes it and gives the focus back', async () => {
    const { answer } = await open();
    let settled = false;
    void answer.then(() => (settled = true));
    await tick();
    expect(settled).toBe(false);
    key(document.activeElement!, 'Escape');
    expect(await answer).toBe(false);
    await fixture.whenStable();
    expect(dialog()).toBeNull();
    await tick();
    expect(document.activeElement).toBe(opener);
  });

  it('Cancel answers false, "Stop anyway" answers true', async () => {
    let { answer } = await open();
    button('confirm-cancel').click();
    expect(await answer).toBe(false);
    ({ answer } = await open());
    button('confirm-ok').click();
    expect(await answer).toBe(true);
    await fixture.whenStable();
    expect(dialog()).toBeNull();
  });

  it('keeps Tab and Shift+Tab inside the dialog', async () => {
    await open();
    key(document.activeElement!, 'Tab');
    expect(document.activeElement).toBe(button('confirm-ok'));
    key(document.activeElement!, 'Tab');
    expect(document.activeElement).toBe(button('confirm-cancel'));
    key(document.activeElement!, 'Tab', true);
    expect(document.activeElement).toBe(button('confirm-ok'));
  });

  it('a newer question cancels the open one', async () => {
    const { answer: first } = await open();
    const second = confirm.ask({ title: 'Again?', message: 'm', confirmLabel: 'Yes' });
    expect(await first).toBe(false);
    await fixture.whenStable();
    expect(el().textContent).toContain('Again?');
    confirm.answer(true);
    expect(await second).toBe(true);
  });
});

describe('App while a confirmation is open', () => {
  it('makes the page behind the dialog inert', async () => {
    TestBed.configureTestingModule({ imports: [App], providers: [provideRouter([])] });
    const fixture = TestBed.createComponent(App);
    await fixture.whenStable();
    const wrapper = (fixture.nativeElement as HTMLElement).querySelector('router-outlet')!.parentElement!;
    expect(wrapper.hasAttribute('inert')).toBe(false);
    const confirm = TestBed.inject(ConfirmStore);
    void confirm.ask({ title: 't', message: 'm', confirmLabel: 'ok' });
    await fixture.whenStable();
    expect(wrapper.hasAttribute('inert')).toBe(true);
    expect((fixture.nativeElement as HTMLElement).querySelector('[role=alertdialog]')!.closest('[inert]')).toBeNull();
    confirm.answer(false);
    await fixture.whenStable();
    expect(wrapper.hasAttribute('inert')).toBe(false);
  });
});

describe('Dashboard: stopping the auth provider', () => {
  let fixture: ComponentFixture<DashboardWithDialog>;
  let http: HttpTestingController;
  const el = () => fixture.nativeElement as HTMLElement;
  const stop = (id: string) => el().querySelector(`article[data-plugin="${id}"] button[data-action=stop]`) as HTMLButtonElement;
  const dialog = () => el().querySelector('[role=alertdialog]') as HTMLElement | null;

  beforeEach(async () => {
    TestBed.configureTestingModule({ imports: [DashboardWithDialog], providers: [provideRouter([]), provideHttpClient(), provideHttpClientTesting()] });
    http = TestBed.inject(HttpTestingController);
    const store = TestBed.inject(PluginsStore);
    const loaded = store.refresh();
    http.expectOne('/api/core/plugins').flush({ plugins: [plugin('apikeys'), plugin('echo')] });
    await loaded;
    fixture = TestBed.createComponent(DashboardWithDialog);
    await fixture.whenStable();
  });

  it('asks before sending; Escape sends nothing and gives the focus back to the stop button', async () => {
    stop('apikeys').focus();
    stop('apikeys').click();
    await fixture.whenStable();
    expect(dialog()).not.toBeNull();
    expect(dialog()!.textContent).toContain('bootstrap admin key');
    expect(dialog()!.contains(document.activeElement)).toBe(true);
    http.expectNone((r) => r.url.includes('/stop'));
    key(document.activeElement!, 'Escape');
    await tick();
    await fixture.whenStable();
    expect(dialog()).toBeNull();
    http.expectNone((r) => r.url.includes('/stop'));
    await tick();
    expect(document.activeElement).toBe(stop('apikeys'));
  });

  it('"Stop anyway" sends the stop with ?confirm=true', async () => {
    stop('apikeys').click();
    await fixture.whenStable();
    (el().querySelector('[data-testid=confirm-ok]') as HTMLButtonElement).click();
    await tick();
    http.expectOne({ method: 'POST', url: '/api/core/plugins/apikeys/stop?confirm=true' }).flush({});
    await tick();
    http.expectOne('/api/core/plugins').flush({ plugins: [plugin('apikeys', { state: 'stopped' }), plugin('echo')] });
    await tick();
    await fixture.whenStable();
    expect(dialog()).toBeNull();
    expect(el().querySelector('article[data-plugin="apikeys"] [data-state]')!.getAttribute('data-state')).toBe('stopped');
  });

  it('another plugin stops without a question', async () => {
    stop('echo').click();
    await fixture.whenStable();
    expect(dialog()).toBeNull();
    http.expectOne({ method: 'POST', url: '/api/core/plugins/echo/stop' }).flush({});
  });
});
