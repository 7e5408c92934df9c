import { provideHttpClient } from '@angular/common/http';
import { HttpTestingController, provideHttpClientTesting } from '@angular/common/http/testing';
import { ComponentFixture, TestBed } from '@angular/core/testing';
import { ApiKeysPanel } from './apikeys-panel';

const tick = () => new Promise((r) => setTimeout(r));
const key = { id: 'ab12', name: 'ci', prefix: 'bkg_ab12_', scopes: ['invoke'], created_at_ms: 1, expires_at_ms: null, revoked_at_ms: null };

describe('ApiKeysPanel', () => {
  let fixture: ComponentFixture<ApiKeysPanel>;
  let http: HttpTestingController;
  const el = () => fixture.nativeElement as HTMLElement;

  beforeEach(async () => {
    TestBed.configureTestingModule({ imports: [ApiKeysPanel], providers: [provideHttpClient(), provideHttpClientTesting()] });
    http = TestBed.inject(HttpTestingController);
    fixture = TestBed.createComponent(ApiKeysPanel);
    fixture.detectChanges();
    http.expectOne({ method: 'POST', url: '/api/plugins/apikeys/list' }).flush({ keys: [] });
    await tick();
    await fixture.whenStable();
  });

  it('creates a key with the chosen scopes and shows it once', async () => {
    const name = el().querySelector('input[name=name]') as HTMLInputElement;
    name.value = 'ci';
    name.dispatchEvent(new Event('input'));
    (el().querySelector('input[name=scope-invoke]') as HTMLInputElement).click();
    await fixture.whenStable();
    (el().querySelector('form') as HTMLFormElement).dispatchEvent(new Event('submit'));
    const req = http.expectOne('/api/plugins/apikeys/create');
    expect(req.request.body).toEqual({ name: 'ci', scopes: ['read', 'invoke'] });
    req.flush({ ...key, key: 'bkg_ab12_secret' });
    await tick();
    http.expectOne('/api/plugins/apikeys/list').flush({ keys: [key] });
    await tick();
    await fixture.whenStable();
    expect((el().querySelector('[data-testid=new-key-value]') as HTMLInputElement).value).toBe('bkg_ab12_secret');
    expect(el().querySelectorAll('tr[data-key-id]').length).toBe(1);
    // "Done" hides the key for good.
    const done = [...el().querySelectorAll('button')].find((b) => b.textContent?.trim() === 'Done')!;
    done.click();
    await fixture.whenStable();
    expect(el().querySelector('[data-testid=new-key]')).toBeNull();
    expect(el().textContent).not.toContain('bkg_ab12_secret');
  });

  it('refuses to create a key without scopes', async () => {
    const name = el().querySelector('input[name=name]') as HTMLInputElement;
    name.value = 'x';
    name.dispatchEvent(new Event('input'));
    (el().querySelector('input[name=scope-read]') as HTMLInputElement).click();
    await fixture.whenStable();
    (el().querySelector('form') as HTMLFormElement).dispatchEvent(new Event('submit'));
    await fixture.whenStable();
    http.expectNone('/api/plugins/apikeys/create');
    expect(el().textContent).toContain('at least one scope');
  });

  it('revokes after a confirmation', async () => {
    fixture.componentInstance.load();
    http.expectOne('/api/plugins/apikeys/list').flush({ keys: [key] });
    await tick();
    await fixture.whenStable();
    const btn = (label: string) => [...el().querySelectorAll('button')].find((b) => b.textContent?.trim() === label)!;
    btn('Revoke').click();
    await fixture.whenStable();
    http.expectNone('/api/plugins/apikeys/revoke');
    btn('Confirm revoke').click();
    const req = http.expectOne('/api/plugins/apikeys/revoke');
    expect(req.request.body).toEqual({ id: 'ab12' });
    req.flush({});
    await tick();
    http.expectOne('/api/plugins/apikeys/list').flush({ keys: [{ ...key, revoked_at_ms: 5 }] });
    await tick();
    await fixture.whenStable();
    expect(el().querySelector('[data-testid=key-status]')!.textContent!.trim()).toBe('revoked');
  });
});
