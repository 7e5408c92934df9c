import { Injectable, inject, signal } from '@angular/core';
import { Api } from './api';
import { PluginsStore } from './plugins.store';
import { ToastStore } from './toast.store';

export const PLUGIN_FILE = /\.(so|dylib|dll)$/i;

/** Why a file cannot be uploaded as a plugin, or null when it can. */
export function uploadProblem(file: { name: string; size: number }): string | null {
  if (!PLUGIN_FILE.test(file.name)) return `${file.name} is not a plugin library (.so, .dylib or .dll)`;
  if (!/^[A-Za-z0-9._+-]+$/.test(file.name)) return `${file.name}: use only letters, digits, '.', '_', '+' and '-' in the name`;
  if (file.size === 0) return `${file.name} is empty`;
  return null;
}

/** Plugin upload: `PUT /api/core/plugins/upload/{filename}` with the raw library as body. */
@Injectable({ providedIn: 'root' })
export class PluginUpload {
  private api = inject(Api);
  private toasts = inject(ToastStore);
  private plugins = inject(PluginsStore);
  readonly busy = signal<string | null>(null);

  async upload(files: FileList | File[]): Promise<void> {
    for (const file of Array.from(files)) {
      const problem = uploadProblem(file);
      if (problem) {
        this.toasts.show('error', problem);
        continue;
      }
      this.busy.set(file.name);
      try {
        await this.api.put(`/api/core/plugins/upload/${encodeURIComponent(file.name)}`, file);
        this.toasts.show('success', `${file.name} uploaded; the host loads it now`);
        void this.plugins.refresh();
      } catch (e) {
        const err = e as { status?: number; message: string };
        const msg =
          err.status === 404 || err.status === 405
            ? 'This host does not accept uploads yet (PUT /api/core/plugins/upload/{filename} is missing)'
            : err.message;
        this.toasts.show('error', `Upload of ${file.name} failed: ${msg}`);
      } finally {
        this.busy.set(null);
      }
    }
  }
}
