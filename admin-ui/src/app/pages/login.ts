import { ChangeDetectionStrategy, Component, inject, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { Router } from '@angular/router';
import { AuthStore } from '../core/auth.store';

@Component({
  selector: 'app-login',
  imports: [FormsModule],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <main class="flex min-h-screen items-center justify-center p-4">
      <form class="card w-full max-w-md space-y-4" (ngSubmit)="submit()" aria-labelledby="login-title">
        <div>
          <h1 id="login-title" class="text-xl font-semibold">bkg admin</h1>
          <p class="muted text-sm">Paste an API key with the <code>read</code> or <code>admin</code> scope. It is kept in this tab's session storage only.</p>
        </div>
        <div>
          <label class="label" for="api-key">API key</label>
          <input id="api-key" name="key" class="input mt-1 font-mono" type="password" autocomplete="off" [(ngModel)]="key"
            [class.input-invalid]="!!auth.error()" [attr.aria-invalid]="!!auth.error()" aria-describedby="login-error" autofocus required />
        </div>
        @if (auth.error(); as err) {
          <p id="login-error" class="rounded-md bg-rose-50 p-3 text-sm text-rose-800 dark:bg-rose-950 dark:text-rose-200" role="alert" data-testid="login-error">{{ err }}</p>
        }
        <button class="btn btn-primary w-full" type="submit" [disabled]="auth.checking()">{{ auth.checking() ? 'Checking…' : 'Log in' }}</button>
      </form>
    </main>
  `,
})
export class Login {
  protected readonly auth = inject(AuthStore);
  private router = inject(Router);
  protected key = signal('');

  async submit() {
    if (await this.auth.login(this.key())) void this.router.navigateByUrl('/plugins');
  }
}
