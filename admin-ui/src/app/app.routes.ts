import { Routes } from '@angular/router';
import { authGuard } from './core/auth.store';
import { Dashboard } from './pages/dashboard';
import { Login } from './pages/login';
import { Shell } from './pages/shell';

export const routes: Routes = [
  { path: 'login', component: Login, title: 'bkg · log in' },
  {
    path: '',
    component: Shell,
    canActivate: [authGuard],
    children: [
      { path: '', pathMatch: 'full', redirectTo: 'plugins' },
      { path: 'plugins', component: Dashboard, title: 'bkg · plugins' },
      { path: 'plugins/:id', pathMatch: 'full', redirectTo: 'plugins/:id/overview' },
      {
        path: 'plugins/:id/:tab',
        loadComponent: () => import('./plugin/plugin-page').then((m) => m.PluginPage),
        title: 'bkg · plugin',
      },
      { path: 'events', loadComponent: () => import('./pages/events').then((m) => m.Events), title: 'bkg · events' },
    ],
  },
  { path: '**', redirectTo: '' },
];
