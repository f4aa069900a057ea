#include <stdio.h>
#include <math.h>
#include "fl_simd.h"
int main(void){
  double maxrel=0; float worst=0;
  for (float x=-103.f; x<=88.7f; x=nextafterf(x, 100.f)) {
     float y=fl_expf(x); double r=exp((double)x); if (r < 1.18e-38) continue;
     double rel=fabs(y-r)/r; if(rel>maxrel){maxrel=rel;worst=x;}
  }
  printf("f32 max rel %.3g (%.2f ulp) at %g\n", maxrel, maxrel/5.96e-8, worst);
  double m2=0, w2=0; unsigned long long s=88172645463325252ULL;
  for (long i=0;i<20000000;i++){ s^=s<<13; s^=s>>7; s^=s<<17; double x=-745.0+ (s%1000000007ULL)/1000000007.0*1454.0;
     double y=fl_exp(x), r=expl((long double)x); if (r<2.3e-308) continue; double rel=fabs(y-r)/r; if(rel>m2){m2=rel;w2=x;} }
  printf("f64 max rel %.3g at %g\n", m2, w2);
  printf("f32 specials %g %g %g %g %g | f64 %g %g %g %g %g\n", fl_expf(-INFINITY), fl_expf(INFINITY), fl_expf(NAN), fl_expf(0.f), fl_expf(-100.f),
         fl_exp(-INFINITY), fl_exp(INFINITY), fl_exp(NAN), fl_exp(0.), fl_exp(-740.));
  return 0;
}
